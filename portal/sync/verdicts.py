"""A test order's events as the organizer reads them, once they are read back from Klaviyo (portal.sync.verify):
Stored in Klaviyo (with the profile's link), Accepted but not visible yet, or dropped (with the likely reason); and
the sum of it for the checklist's last step."""
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import load_only

from portal.extensions import db
from portal.sync import connection as klaviyo
from portal.sync.health_models import DROPPED, STORED, WAITING, EventCheck
from portal.sync.models import EVENT, SENT, KlaviyoConnection, OutboxEvent
from portal.sync.verify import SCOPE

# --- what the pages show --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """One accepted event of a test order, as the organizer reads it."""

    state: str  # stored | waiting | dropped | no_permission
    text: str
    profile_url: str | None = None
    reason: str | None = None


def verdicts(connection: KlaviyoConnection | None, rows: list[OutboxEvent]) -> dict[int, Verdict]:
    """By outbox row id: the read-back verdict of each accepted event (nothing for rows not accepted yet)."""
    sent = [row for row in rows if row.status == SENT and row.kind == EVENT]  # a list subscription is no event
    if not sent:
        return {}
    checks = {c.outbox_id: c for c in db.session.scalars(
        select(EventCheck).where(EventCheck.outbox_id.in_([row.id for row in sent])))}
    can_read = connection is not None and klaviyo.has_scopes(connection, SCOPE)
    base = current_app.config["KLAVIYO_OAUTH_BASE"].rstrip("/")
    out = {}
    for row in sent:
        check = checks.get(row.id)
        if check is not None and check.state == STORED:
            url = f"{base}/profile/{check.profile_id}" if check.profile_id else None
            out[row.id] = Verdict(STORED, "Stored in Klaviyo", url)
        elif check is not None and check.state == DROPPED:
            out[row.id] = Verdict(DROPPED, "Klaviyo dropped it", reason=check.reason)
        elif not can_read:
            out[row.id] = Verdict("no_permission", "Accepted. To check that Klaviyo kept it, reconnect Klaviyo: the "
                                                   "portal now asks to read events back (events:read).")
        else:
            out[row.id] = Verdict(WAITING, "Accepted, not visible yet: checking Klaviyo again by itself")
    return out



@dataclass(frozen=True)
class OrderCheck:
    """A test order's events, read back: how many Klaviyo stored, dropped, or has not shown yet."""

    total: int = 0
    stored: int = 0
    dropped: int = 0
    waiting: int = 0  # accepted, not visible yet (or not accepted yet)
    no_permission: bool = False
    reasons: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        return bool(self.total) and self.stored == self.total

    @property
    def checking(self) -> bool:
        return bool(self.waiting) and not self.no_permission

    @property
    def note(self) -> str | None:
        """One sentence for the checklist's last step."""
        if self.done or not self.total:
            return None
        if self.no_permission:
            return ("Reconnect Klaviyo so the portal may read events back (events:read): only then can it check "
                    "that Klaviyo kept them.")
        if self.dropped:
            why = " ".join(dict.fromkeys(self.reasons))
            return (f"Klaviyo dropped {self.dropped} of this test order's {self.total} events. {why} "
                    "Buy another test ticket with a real address.").replace("  ", " ")
        return f"Checking Klaviyo: {self.stored} of {self.total} events stored so far."


def order_check(connection: KlaviyoConnection | None, order_id: int) -> OrderCheck:
    return order_checks(connection, [order_id])[order_id]


def order_checks(connection: KlaviyoConnection | None, order_ids: list[int]) -> dict[int, OrderCheck]:
    """order_check of several orders in two queries (the checklist looks at ten test orders, and polls)."""
    rows = list(db.session.scalars(
        select(OutboxEvent).options(load_only(OutboxEvent.id, OutboxEvent.order_id, OutboxEvent.status,
                                              OutboxEvent.kind))
        .where(OutboxEvent.order_id.in_(order_ids), OutboxEvent.kind == EVENT).order_by(OutboxEvent.id)))
    found = verdicts(connection, rows)
    out = {}
    for order_id in order_ids:
        mine = [row for row in rows if row.order_id == order_id]
        states = [found[row.id].state if row.id in found else None for row in mine]
        out[order_id] = OrderCheck(total=len(mine), stored=states.count(STORED), dropped=states.count(DROPPED),
                                   waiting=len(mine) - states.count(STORED) - states.count(DROPPED),
                                   no_permission="no_permission" in states,
                                   reasons=tuple(found[row.id].reason for row in mine
                                                 if row.id in found and found[row.id].reason))
    return out
