"""What the sandbox keeps of an account's metrics, flows and segments, in the sandbox's SQLite file.

A metric exists once the first event of that name arrives, as in Klaviyo, and belongs to the
integration that sent it: our OAuth app, or (added by a test through ``/_sandbox/metrics``) another
one such as Shopify, whose "Placed Order" is a different metric with its own id.

This module does not import ``store`` (store imports this module's schema); the few writes that need
a transaction open their own.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import string
from contextlib import contextmanager
from datetime import UTC, datetime

SCHEMA = """
CREATE TABLE IF NOT EXISTS metrics (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    integration_key TEXT NOT NULL,
    integration TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (account_id, name, integration_key)
);
CREATE TABLE IF NOT EXISTS flows (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    installation_id TEXT,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    archived INTEGER NOT NULL DEFAULT 0,
    trigger_type TEXT NOT NULL,
    definition TEXT NOT NULL,
    received TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS flows_account ON flows (account_id);
CREATE TABLE IF NOT EXISTS segments (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    installation_id TEXT,
    name TEXT NOT NULL,
    definition TEXT NOT NULL,
    is_starred INTEGER NOT NULL DEFAULT 0,
    received TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_account ON segments (account_id);
"""

TABLES = ("metrics", "flows", "segments")

_ID_ALPHABET = string.ascii_letters + string.digits


@contextmanager
def _transaction(conn: sqlite3.Connection):
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def short_id() -> str:
    """An id shaped like Klaviyo's metric, flow and segment ids: six letters and digits (e.g. VevE7N)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))


def action_id() -> str:
    """Flow action ids are numeric strings in Klaviyo."""
    return str(10_000_000 + secrets.randbelow(89_999_999))


def iso(ts: float | None) -> str | None:
    """Klaviyo's timestamps: ISO 8601 with an offset, to the second."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).replace(microsecond=0).isoformat()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "app"


def app_integration(client_id: str, app_name: str) -> dict:
    """The integration Klaviyo gives metrics created through an OAuth app: the app itself."""
    digest = hashlib.sha256(client_id.encode()).hexdigest()
    return {"object": "integration", "id": digest[:6], "key": _slug(app_name), "name": app_name,
            "category": "Custom"}


def integration_from(spec: dict) -> dict:
    """An integration given by a test ({"name", "key"?, "category"?}), completed like Klaviyo's."""
    name = spec["name"]
    key = spec.get("key") or _slug(name)
    return {"object": "integration", "id": hashlib.sha256(key.encode()).hexdigest()[:6], "key": key,
            "name": name, "category": spec.get("category") or "Custom"}


# --- metrics ------------------------------------------------------------------------------------


def register_metrics(conn: sqlite3.Connection, account_id: str, integration: dict, names, now: float) -> None:
    """The first event of a name creates its metric (with an id); later ones find it there."""
    rows = [(short_id(), account_id, name, integration["key"], json.dumps(integration), now, now)
            for name in dict.fromkeys(names)]
    if rows:
        conn.executemany(
            "INSERT OR IGNORE INTO metrics (id, account_id, name, integration_key, integration, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


def add_metric(conn: sqlite3.Connection, account_id: str, name: str, integration: dict, now: float) -> dict:
    """A metric as another integration would have made it (tests and demos); the same one if it exists."""
    register_metrics(conn, account_id, integration, [name], now)
    row = conn.execute("SELECT * FROM metrics WHERE account_id = ? AND name = ? AND integration_key = ?",
                       (account_id, name, integration["key"])).fetchone()
    return metric_dict(row)


def metric_dict(row: sqlite3.Row) -> dict:
    return {"id": row["id"], "account_id": row["account_id"], "name": row["name"],
            "integration": json.loads(row["integration"]), "created_at": row["created_at"],
            "updated_at": row["updated_at"]}


def list_metrics(conn: sqlite3.Connection, account_id: str | None = None) -> list[dict]:
    sql, args = "SELECT * FROM metrics", []
    if account_id:
        sql += " WHERE account_id = ?"
        args.append(account_id)
    return [metric_dict(row) for row in conn.execute(sql + " ORDER BY seq", args)]


def metric_ids(conn: sqlite3.Connection, account_id: str) -> set[str]:
    return {row["id"] for row in conn.execute("SELECT id FROM metrics WHERE account_id = ?", (account_id,))}


# --- flows and segments -------------------------------------------------------------------------


def create_flow(conn: sqlite3.Connection, *, flow_id: str, account_id: str, installation_id: str | None,
                name: str, trigger_type: str, definition: dict, received: dict, now: float) -> dict:
    """Store a new flow. Flows made through the API start as drafts, as in Klaviyo."""
    with _transaction(conn):
        conn.execute(
            "INSERT INTO flows (id, account_id, installation_id, name, status, archived, trigger_type, definition, "
            "received, created_at, updated_at) VALUES (?, ?, ?, ?, 'draft', 0, ?, ?, ?, ?, ?)",
            (flow_id, account_id, installation_id, name, trigger_type, json.dumps(definition),
             json.dumps(received), now, now))
    return get_flow(conn, flow_id)


def _flow_dict(row: sqlite3.Row) -> dict:
    return {"id": row["id"], "account_id": row["account_id"], "installation_id": row["installation_id"],
            "name": row["name"], "status": row["status"], "archived": bool(row["archived"]),
            "trigger_type": row["trigger_type"], "definition": json.loads(row["definition"]),
            "received": json.loads(row["received"]), "created_at": row["created_at"],
            "updated_at": row["updated_at"]}


def get_flow(conn: sqlite3.Connection, flow_id: str) -> dict | None:
    row = conn.execute("SELECT * FROM flows WHERE id = ?", (flow_id,)).fetchone()
    return _flow_dict(row) if row else None


def list_flows(conn: sqlite3.Connection, account_id: str | None = None) -> list[dict]:
    sql, args = "SELECT * FROM flows", []
    if account_id:
        sql += " WHERE account_id = ?"
        args.append(account_id)
    return [_flow_dict(row) for row in conn.execute(sql + " ORDER BY seq", args)]


def create_segment(conn: sqlite3.Connection, *, segment_id: str, account_id: str, installation_id: str | None,
                   name: str, definition: dict, is_starred: bool, received: dict, now: float) -> dict:
    with _transaction(conn):
        conn.execute(
            "INSERT INTO segments (id, account_id, installation_id, name, definition, is_starred, received, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (segment_id, account_id, installation_id, name, json.dumps(definition), int(is_starred),
             json.dumps(received), now, now))
    return get_segment(conn, segment_id)


def _segment_dict(row: sqlite3.Row) -> dict:
    return {"id": row["id"], "account_id": row["account_id"], "installation_id": row["installation_id"],
            "name": row["name"], "definition": json.loads(row["definition"]),
            "is_starred": bool(row["is_starred"]), "received": json.loads(row["received"]),
            "created_at": row["created_at"], "updated_at": row["updated_at"]}


def get_segment(conn: sqlite3.Connection, segment_id: str) -> dict | None:
    row = conn.execute("SELECT * FROM segments WHERE id = ?", (segment_id,)).fetchone()
    return _segment_dict(row) if row else None


def list_segments(conn: sqlite3.Connection, account_id: str | None = None) -> list[dict]:
    sql, args = "SELECT * FROM segments", []
    if account_id:
        sql += " WHERE account_id = ?"
        args.append(account_id)
    return [_segment_dict(row) for row in conn.execute(sql + " ORDER BY seq", args)]
