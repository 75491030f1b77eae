"""What the sandbox keeps of an account's lists and of the profiles subscribed to them, in its SQLite file.

Every account starts with Klaviyo's two default lists, "Newsletter" and "Preview List" (made the first time the
account's lists are read, with ids derived from the account, so a reset brings back the same ones). A list the
organizer deletes in Klaviyo (``DELETE /_sandbox/lists/<id>``) is kept, marked deleted: the API no longer shows it
and subscribing to it is a 404.

A profile is subscribed to a list once: the same profile again is counted in ``times_received``, so a test can
tell what was sent from what was kept (as for events).

Like objects_store, this module does not import ``store`` (store imports this module's schema).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import string
from contextlib import contextmanager

SCHEMA = """
CREATE TABLE IF NOT EXISTS lists (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    installation_id TEXT,
    name TEXT NOT NULL,
    opt_in_process TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    deleted_at REAL
);
CREATE INDEX IF NOT EXISTS lists_account ON lists (account_id);
CREATE TABLE IF NOT EXISTS list_subscriptions (
    seq INTEGER PRIMARY KEY,
    account_id TEXT NOT NULL,
    installation_id TEXT,
    list_id TEXT NOT NULL,
    profile_key TEXT NOT NULL,
    email TEXT,
    phone_number TEXT,
    channels TEXT NOT NULL,
    status TEXT NOT NULL,
    custom_source TEXT,
    historical_import INTEGER NOT NULL,
    consented_at TEXT,
    received_at REAL NOT NULL,
    times_received INTEGER NOT NULL DEFAULT 1,
    last_received_at REAL,
    UNIQUE (account_id, list_id, profile_key)
);
"""

TABLES = ("lists", "list_subscriptions")
DEFAULT_LISTS = (("Newsletter", "single_opt_in"), ("Preview List", "single_opt_in"))
# A subscription that needs the profile to confirm (double opt-in), or one already in force.
SUBSCRIBED, AWAITING_CONFIRMATION = "subscribed", "awaiting_confirmation"
NO_LIST = ""  # subscriptions sent without a list: the account's default opt-in applies

_ALPHABET = string.ascii_letters + string.digits


@contextmanager
def _transaction(conn: sqlite3.Connection):
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def list_id(seed: str | None = None) -> str:
    """A list id shaped like Klaviyo's (six letters and digits, e.g. Y6nRLr); derived from `seed` when given."""
    if seed is None:
        return "".join(secrets.choice(_ALPHABET) for _ in range(6))
    number = int(hashlib.sha256(seed.encode()).hexdigest(), 16)
    chars = []
    for _ in range(6):
        number, index = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[index])
    return "".join(chars)


def _list_dict(row: sqlite3.Row) -> dict:
    return {"id": row["id"], "account_id": row["account_id"], "installation_id": row["installation_id"],
            "name": row["name"], "opt_in_process": row["opt_in_process"], "created_at": row["created_at"],
            "updated_at": row["updated_at"], "deleted_at": row["deleted_at"]}


def ensure_defaults(conn: sqlite3.Connection, account_id: str, now: float) -> None:
    """The lists a new Klaviyo account has; a default list the organizer deleted stays deleted."""
    conn.executemany(
        "INSERT OR IGNORE INTO lists (id, account_id, name, opt_in_process, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(list_id(f"{account_id}:{name}"), account_id, name, opt_in, now, now) for name, opt_in in DEFAULT_LISTS])


def create_list(conn: sqlite3.Connection, *, account_id: str, installation_id: str | None, name: str,
                opt_in_process: str, now: float) -> dict:
    new_id = list_id()
    with _transaction(conn):
        conn.execute(
            "INSERT INTO lists (id, account_id, installation_id, name, opt_in_process, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", (new_id, account_id, installation_id, name, opt_in_process, now, now))
    return get_list(conn, new_id)


def get_list(conn: sqlite3.Connection, wanted: str, account_id: str | None = None,
             include_deleted: bool = True) -> dict | None:
    sql, args = "SELECT * FROM lists WHERE id = ?", [wanted]
    if account_id:
        sql += " AND account_id = ?"
        args.append(account_id)
    if not include_deleted:
        sql += " AND deleted_at IS NULL"
    row = conn.execute(sql, args).fetchone()
    return _list_dict(row) if row else None


def lists(conn: sqlite3.Connection, account_id: str | None = None, include_deleted: bool = False) -> list[dict]:
    """An account's lists (or every account's), oldest first."""
    where, args = [], []
    if account_id:
        where.append("account_id = ?")
        args.append(account_id)
    if not include_deleted:
        where.append("deleted_at IS NULL")
    sql = "SELECT * FROM lists" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq"
    return [_list_dict(row) for row in conn.execute(sql, args)]


def delete_list(conn: sqlite3.Connection, wanted: str, now: float) -> bool:
    """The organizer deleted the list in Klaviyo. False when there is no such (undeleted) list."""
    with _transaction(conn):
        return conn.execute("UPDATE lists SET deleted_at = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL",
                            (now, now, wanted)).rowcount == 1


def subscribe(conn: sqlite3.Connection, rows: list[dict]) -> int:
    """Record subscriptions in one transaction; returns how many were new. Each row: account_id,
    installation_id, list_id, profile_key, email, phone_number, channels, status, custom_source,
    historical_import, consented_at, received_at. A profile already on the list keeps its first consent."""
    columns = ("account_id", "installation_id", "list_id", "profile_key", "email", "phone_number", "channels",
               "status", "custom_source", "historical_import", "consented_at", "received_at")
    inserted = 0
    with _transaction(conn):
        for row in rows:
            repeated = conn.execute(
                "UPDATE list_subscriptions SET times_received = times_received + 1, last_received_at = ? "
                "WHERE account_id = ? AND list_id = ? AND profile_key = ?",
                (row["received_at"], row["account_id"], row["list_id"], row["profile_key"])).rowcount
            if repeated:
                continue
            conn.execute(f"INSERT INTO list_subscriptions ({', '.join(columns)}, last_received_at) "
                         f"VALUES ({', '.join('?' for _ in columns)}, ?)",
                         (*(row[c] for c in columns), row["received_at"]))
            inserted += 1
    return inserted


def subscriptions(conn: sqlite3.Connection, account_id: str | None = None,
                  wanted_list: str | None = None) -> list[dict]:
    """Subscriptions, newest first; for one account and/or one list ("" for those sent without a list)."""
    where, args = [], []
    if account_id:
        where.append("account_id = ?")
        args.append(account_id)
    if wanted_list is not None:
        where.append("list_id = ?")
        args.append(wanted_list)
    sql = "SELECT * FROM list_subscriptions" + (" WHERE " + " AND ".join(where) if where else "")
    out = []
    for row in conn.execute(sql + " ORDER BY seq DESC", args):
        item = {k: row[k] for k in row.keys() if k != "seq"}
        item["historical_import"] = bool(item["historical_import"])
        item["channels"] = item["channels"].split()
        out.append(item)
    return out
