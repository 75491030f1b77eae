"""The orders list of an event: filters (status, test or real, channel), search by name or e-mail, pages of 50, and
per order its tickets, its Klaviyo sync status and whether it was paid in another currency than the event's.

A page costs four indexed queries however many orders the event has: the page itself, its count, and the
tickets and Klaviyo events of the 50 orders shown (bench/orders_list.py measures it at 10,000 orders).
"""
from collections import defaultdict
from dataclasses import dataclass, field
from math import ceil

from sqlalchemy import func, or_, select
from sqlalchemy.orm import load_only

from portal.extensions import db
from portal.orders.models import CHANNEL_TEXT, ORDER_STATUS_TEXT, Order, Ticket
from portal.orders.sync_status import OrderSync, summarize
from portal.sync.models import OutboxEvent

PER_PAGE = 50
# The columns the list shows: loading only these (no notes, no tokens) halves the time spent turning rows into orders.
LISTED = (Order.id, Order.placed_at, Order.first_name, Order.last_name, Order.email, Order.total, Order.currency,
          Order.status, Order.source, Order.is_test)
SEARCH_MAX = 100
KINDS = {"real": "Real orders", "test": "Test orders"}


@dataclass(frozen=True)
class Filters:
    """What the organizer asked for; anything unknown in the query string is ignored, never an error."""

    status: str = ""
    kind: str = ""
    channel: str = ""
    q: str = ""
    page: int = 1

    @property
    def active(self) -> bool:
        return bool(self.status or self.kind or self.channel or self.q)

    def args(self, **changes) -> dict:
        """The query-string arguments of these filters (for links to other pages), without empty ones."""
        values = {"status": self.status, "kind": self.kind, "channel": self.channel, "q": self.q,
                  "page": self.page, **changes}
        return {k: v for k, v in values.items() if v and not (k == "page" and v == 1)}


def read_filters(args) -> Filters:
    status = args.get("status", "")
    kind = args.get("kind", "")
    channel = args.get("channel", "")
    raw_page = (args.get("page") or "1").strip()
    return Filters(status=status if status in ORDER_STATUS_TEXT else "", kind=kind if kind in KINDS else "",
                   channel=channel if channel in CHANNEL_TEXT else "",
                   q=" ".join("".join(c for c in args.get("q") or "" if c.isprintable()).split())[:SEARCH_MAX],
                   # Six digits at most: int() refuses 4300 and more (a 500), and no list has a million pages.
                   page=max(min(int(raw_page), 100_000), 1) if raw_page.isascii() and raw_page.isdigit()
                   and len(raw_page) <= 6 else 1)


@dataclass
class Row:
    order: Order
    tickets: int
    sync: OrderSync
    other_currency: bool  # paid in another currency than the event's (a store set to another currency)


@dataclass
class Page:
    rows: list[Row] = field(default_factory=list)
    total: int = 0
    page: int = 1
    pages: int = 1


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(event_id: int, filters: Filters) -> list:
    where = [Order.event_id == event_id]
    if filters.status:
        where.append(Order.status == filters.status)
    if filters.kind:
        where.append(Order.is_test == (filters.kind == "test"))  # "=", not "IS": an index can answer it
    if filters.channel:
        where.append(Order.source == filters.channel)
    if filters.q:
        pattern = _like(filters.q)
        # Case-insensitive either way: SQLite's LIKE already ignores case (lower() would only cost a call per row),
        # PostgreSQL's ILIKE does it for every alphabet.
        sqlite = db.session.get_bind().dialect.name == "sqlite"
        name = Order.first_name + " " + Order.last_name
        where.append(or_(*((column.like if sqlite else column.ilike)(pattern, escape="\\")
                           for column in (Order.email, name))))
    return where


def orders_page(event, filters: Filters) -> Page:
    """One page of the event's orders, newest first, with what the list shows of each."""
    where = _where(event.id, filters)
    listed = (select(Order).options(load_only(*LISTED, raiseload=True)).where(*where).order_by(Order.id.desc())
              .limit(PER_PAGE))
    orders, total, page = [], None, filters.page
    if filters.q:
        # A search reads every order of the event anyway: count the matches in that same pass.
        found = db.session.execute(listed.add_columns(func.count().over()).offset((page - 1) * PER_PAGE)).all()
        orders, total = [order for order, _ in found], (found[0][1] if found else None)
    if total is None:  # no search (the indexes count fast), or a page past the last match
        total = db.session.scalar(select(func.count()).select_from(Order).where(*where)) or 0
        page = min(page, max(ceil(total / PER_PAGE), 1))
        orders = list(db.session.scalars(listed.offset((page - 1) * PER_PAGE))) if total else []
    pages = max(ceil(total / PER_PAGE), 1)
    ids = [order.id for order in orders]
    tickets, events = {}, defaultdict(list)
    if ids:
        tickets = dict(db.session.execute(select(Ticket.order_id, func.count()).where(Ticket.order_id.in_(ids))
                                          .group_by(Ticket.order_id)).all())
        for order_id, status, profile_key in db.session.execute(
                select(OutboxEvent.order_id, OutboxEvent.status, OutboxEvent.profile_key)
                .where(OutboxEvent.order_id.in_(ids))):
            events[order_id].append((status, profile_key))
    rows = [Row(order, tickets.get(order.id, 0), summarize(events[order.id]), order.currency != event.currency)
            for order in orders]
    return Page(rows=rows, total=total, page=page, pages=pages)


def channels_of(event_id: int) -> list[str]:
    """The channels this event has orders from, for the channel filter (always including the portal's own)."""
    used = set(db.session.scalars(select(Order.source).where(Order.event_id == event_id).distinct()))
    return [key for key in CHANNEL_TEXT if key in used or key in ("event_page", "widget")]
