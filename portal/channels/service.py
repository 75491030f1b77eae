"""Turning a store's paid order into portal orders, through the same place_order as the widget, and logging it.

The outbox, the worker and the Klaviyo payloads are untouched: a channel order is a portal order with
source "shopify" or "wix" and the prices the store charged.
"""
import json
import logging
from dataclasses import dataclass, field

from flask import current_app, url_for
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from portal.channels import shopify, wix
from portal.channels.common import ExternalLine, ExternalOrder, attendee_input, describe_item, purchaser, unit_prices
from portal.channels.models import (
    CREATED, DUPLICATE, IGNORED, OVERSOLD, PLATFORM_NAMES, REJECTED, SHOPIFY, UNKNOWN_ORDER, UNMAPPED,
    ChannelMapping, ChannelWebhook, SalesChannel,
)
from portal.consent.service import ConsentInput
from portal.events.models import Event, TicketType
from portal.extensions import db
from portal.orders.models import Order
from portal.orders.service import AttendeeInput, OrderInput, place_order
from portal.types import utcnow

log = logging.getLogger("portal.channels")
KEEP_PER_OUTCOME = 200  # rejected, duplicate and ignored deliveries kept per channel; imports are kept for good


def channel_for(organizer_id: int, platform: str) -> SalesChannel | None:
    return db.session.scalar(select(SalesChannel).where(SalesChannel.organizer_id == organizer_id,
                                                        SalesChannel.platform == platform))


def webhook_url(platform: str) -> str:
    """The exact URL the organizer registers in the store."""
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + url_for(f"webhooks.{platform}")


def seen(channel: SalesChannel, webhook_id: str | None) -> ChannelWebhook | None:
    if not webhook_id:
        return None
    return db.session.scalar(select(ChannelWebhook).where(ChannelWebhook.channel_id == channel.id,
                                                          ChannelWebhook.webhook_id == webhook_id))


def first_import(channel: SalesChannel, external_order_id: str) -> ChannelWebhook | None:
    """The delivery that first brought this store order in, if any (a store may send one order twice)."""
    return db.session.scalar(select(ChannelWebhook).where(
        ChannelWebhook.channel_id == channel.id, ChannelWebhook.external_order_id == external_order_id,
        ChannelWebhook.outcome.in_((CREATED, UNMAPPED, OVERSOLD))).order_by(ChannelWebhook.id).limit(1))


def record(channel: SalesChannel, outcome: str, detail: str, *, topic: str = "", webhook_id: str | None = None,
           order_ref: tuple[str | None, str | None] = (None, None), order_id: int | None = None) -> ChannelWebhook:
    """Log a delivery that created no order, and commit. order_ref: the store's (order id, order name);
    order_id: the first portal order it changed (a cancellation or refund), for the log's links."""
    entry = ChannelWebhook(channel_id=channel.id, topic=topic[:120], webhook_id=webhook_id, outcome=outcome,
                           detail=detail, external_order_id=order_ref[0], external_order_name=order_ref[1],
                           order_id=order_id)
    channel.last_webhook_at = utcnow()
    db.session.add(entry)
    try:
        db.session.commit()
    except IntegrityError:
        # The same delivery, handled meanwhile by another request.
        db.session.rollback()
        if webhook_id is None:
            raise
        return record(channel, DUPLICATE, f"Delivery {webhook_id} was already received; nothing new was created.",
                      topic=topic)
    if outcome in (REJECTED, DUPLICATE, IGNORED, UNKNOWN_ORDER):
        _prune(channel.id, outcome)
    return entry


def _prune(channel_id: int, outcome: str) -> None:
    old = (select(ChannelWebhook.id).where(ChannelWebhook.channel_id == channel_id, ChannelWebhook.outcome == outcome)
           .order_by(ChannelWebhook.id.desc()).offset(KEEP_PER_OUTCOME).scalar_subquery())
    db.session.execute(delete(ChannelWebhook).where(ChannelWebhook.id.in_(old)))
    db.session.commit()


def duplicate_of(channel: SalesChannel, earlier: ChannelWebhook, topic: str, webhook_id: str | None) -> ChannelWebhook:
    what = f"order {earlier.external_order_name}" if earlier.external_order_name else "delivery"
    # The earlier entry already holds this webhook id when it is the same delivery again.
    return record(channel, DUPLICATE, f"Already received ({what}, log entry #{earlier.id}); nothing new was created.",
                  topic=topic, webhook_id=None if earlier.webhook_id == webhook_id else webhook_id,
                  order_ref=(None, earlier.external_order_name))


@dataclass
class Resolved:
    """The order's line items sorted into portal events, and those no mapping covers."""

    groups: list[tuple[Event, list[tuple[TicketType, ExternalLine]]]] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def find_mapping(mappings: list[ChannelMapping], product_id: str | None, variant_id: str | None) -> ChannelMapping | None:
    """The most specific mapping for a line item: product and variant, then variant, then the whole product."""
    best, best_score = None, 0
    for mapping in mappings:
        if mapping.variant_id and mapping.variant_id != variant_id:
            continue
        if mapping.product_id and mapping.product_id != product_id:
            continue
        score = (2 if mapping.variant_id else 0) + (1 if mapping.product_id else 0)
        if score > best_score:
            best, best_score = mapping, score
    return best


def resolve(channel: SalesChannel, lines: list[ExternalLine]) -> Resolved:
    mappings = [m for m in channel.mappings
                if m.ticket_type is not None and m.ticket_type.event.organizer_id == channel.organizer_id]
    resolved = Resolved()
    by_event: dict[int, list] = {}
    for line in lines:
        if line.quantity <= 0:
            continue
        mapping = find_mapping(mappings, line.product_id, line.variant_id)
        if mapping is None:
            resolved.skipped.append(line.summary())
            continue
        ticket_type = mapping.ticket_type
        if ticket_type.event_id not in by_event:
            by_event[ticket_type.event_id] = []
            resolved.groups.append((ticket_type.event, by_event[ticket_type.event_id]))
        by_event[ticket_type.event_id].append((ticket_type, line))
    return resolved


def import_order(channel: SalesChannel, external: ExternalOrder, *, topic: str, webhook_id: str | None,
                 payload: str) -> ChannelWebhook:
    """Record a paid store order as portal order(s), one per event it has tickets for. Never twice."""
    earlier = first_import(channel, external.order_id)
    if earlier is not None:
        return duplicate_of(channel, earlier, topic, webhook_id)
    entry = ChannelWebhook(channel_id=channel.id, topic=topic[:120], webhook_id=webhook_id, outcome=CREATED,
                           external_order_id=external.order_id, external_order_name=external.name, payload=payload)
    try:
        return _import(channel, external, external.lines, entry)
    except IntegrityError:
        # Another request took the same webhook id between our check and our commit.
        db.session.rollback()
        earlier = seen(channel, webhook_id) or first_import(channel, external.order_id)
        if earlier is None:
            raise
        return duplicate_of(channel, earlier, topic, None)


def import_again(entry: ChannelWebhook) -> list[Order] | None:
    """Import the line items an earlier delivery left out, now that they may be mapped.

    Returns the new orders ([] when still nothing is mapped), or None when someone else just did it.
    """
    channel = db.session.get(SalesChannel, entry.channel_id)
    external = parse_stored(channel.platform, entry.payload)
    left_out = {item["line_id"] for item in json.loads(entry.skipped or "[]")}
    lines = [line for line in external.lines if line.line_id in left_out]
    if not resolve(channel, lines).groups:
        return []
    before = {o.id for o in orders_of(entry)}
    previous = entry.skipped
    try:
        _import(channel, external, lines, entry, claim=previous)
    except _AlreadyTaken:
        db.session.rollback()
        return None
    return [o for o in orders_of(entry) if o.id not in before]


class _AlreadyTaken(Exception):
    pass


def parse_stored(platform: str, payload: str) -> ExternalOrder:
    data = json.loads(payload)
    return shopify.parse_order(data) if platform == SHOPIFY else wix.parse_order(data)


def orders_of(entry: ChannelWebhook) -> list[Order]:
    """The portal orders a delivery created or changed (one per event of the store order)."""
    if not entry.external_order_id:
        return []
    return orders_for(db.session.get(SalesChannel, entry.channel_id), entry.external_order_id)


def orders_for(channel: SalesChannel, external_order_id: str) -> list[Order]:
    """The portal orders imported from one store order: one per event it had tickets for."""
    return list(db.session.scalars(select(Order).where(
        Order.organizer_id == channel.organizer_id,
        Order.external_ref == f"{channel.platform}:{external_order_id}").order_by(Order.id)))


def _import(channel: SalesChannel, external: ExternalOrder, lines: list[ExternalLine], entry: ChannelWebhook,
            claim: str | None = None) -> ChannelWebhook:
    platform = PLATFORM_NAMES[channel.platform]
    label = f"{platform} order {external.name}"
    region = current_app.config["DEFAULT_PHONE_REGION"]
    first, last, email, phone, buyer_notes = purchaser(external.buyer, region)
    channel.last_webhook_at = utcnow()
    if email is None:
        entry.outcome = REJECTED
        entry.detail = (f"{label} has no valid e-mail address for the purchaser, so it was not imported: the portal "
                        "and Klaviyo need one.")
        db.session.add(entry)
        db.session.commit()
        return entry
    resolved = resolve(channel, lines)
    skipped_text = [describe_item(item) for item in resolved.skipped]
    if not resolved.groups:
        entry.outcome = UNMAPPED
        entry.skipped = json.dumps(resolved.skipped)
        entry.detail = "\n".join([f"Nothing imported from {label}: none of its items is mapped to a ticket type."]
                                 + [f"Not mapped: {item}" for item in skipped_text])
        db.session.add(entry)
        db.session.commit()
        return entry

    if claim is not None:
        # Import again: take the left-out items atomically, so two clicks can't import them twice.
        taken = db.session.execute(update(ChannelWebhook).where(
            ChannelWebhook.id == entry.id, ChannelWebhook.skipped == claim).values(
            skipped=json.dumps(resolved.skipped) if resolved.skipped else None)).rowcount
        if taken != 1:
            raise _AlreadyTaken()
    else:
        entry.skipped = json.dumps(resolved.skipped) if resolved.skipped else None
        db.session.add(entry)  # committed together with the first order

    purchaser_attendee = AttendeeInput(first, last, email, phone)
    created: list[Order] = []
    summaries: list[str] = []
    for event, items in resolved.groups:
        notes: list[str] = list(buyer_notes)
        order_lines, prices = [], []
        for ticket_type, line in items:
            for details, price in zip(line.attendees, unit_prices(line)):
                position = len(order_lines) + 1
                attendee = attendee_input(details, purchaser_attendee, f"ticket {position} ({ticket_type.name})", notes,
                                          region)
                order_lines.append((ticket_type, attendee))
                prices.append(price)
        if external.currency != event.currency:
            notes.append(f"Paid in {external.currency} in {platform}; this event's ticket prices are in "
                         f"{event.currency}.")
        notes.extend(external.other_charges)
        others = [e.name for e, _ in resolved.groups if e.id != event.id]
        if others:
            notes.append(f"{label} also had tickets for {', '.join(others)}, imported as a separate order.")
        if skipped_text:
            notes.append(f"Not imported from {label}: {'; '.join(skipped_text)}: not mapped to a ticket type. "
                         f"Map them under Integrations → {platform} → Map products, then use Import again in the "
                         "channel's webhook log.")
        data = OrderInput(first_name=first, last_name=last, email=email, phone=phone, lines=order_lines,
                          source=channel.platform, is_test=external.is_test, prices=prices,
                          currency=external.currency, placed_at=external.placed_at, external_ref=external.ref,
                          discount_label=", ".join(external.discount_codes)[:40] or None, notes=notes,
                          consent=_consent(channel, external))
        order = place_order(event, data, allow_oversell=True)
        created.append(order)
        summaries.append(f"Order #{order.id} for {event.name}: {len(order_lines)} ticket(s), "
                         f"{order.currency} {order.total}.")

    oversold = [line for order in created for line in order.note_lines if line.startswith("Oversold")]
    db.session.refresh(entry)
    if entry.order_id is None:
        entry.order_id = created[0].id
    if claim is not None:
        # Keep the history, but list as unmapped only what still is.
        earlier_lines = [line for line in entry.detail.splitlines() if not line.startswith("Not mapped: ")]
        detail = earlier_lines + [f"Imported again {utcnow():%d %b %Y %H:%M} UTC:"] + summaries
    else:
        detail = summaries
    detail += [f"Not mapped: {item}" for item in skipped_text] + oversold
    entry.detail = "\n".join(detail)
    entry.outcome = OVERSOLD if (oversold or entry.outcome == OVERSOLD) else (UNMAPPED if resolved.skipped else CREATED)
    db.session.commit()
    log.info("channel=%s order=%s imported as %s outcome=%s", channel.id, external.ref,
             [o.id for o in created], entry.outcome)
    return entry


def _consent(channel: SalesChannel, external: ExternalOrder) -> ConsentInput:
    """The store's marketing consent, as the same consent record the portal's checkout writes."""
    marketing = external.marketing
    return ConsentInput(email=marketing.email, sms=marketing.sms, channel=channel.platform, language=marketing.language,
                        consented_at=marketing.consented_at or external.placed_at, source_detail=marketing.detail[:300])


def stats(channel: SalesChannel) -> dict:
    """Deliveries by outcome, for View Details and the card."""
    return dict(db.session.execute(select(ChannelWebhook.outcome, func.count()).where(
        ChannelWebhook.channel_id == channel.id).group_by(ChannelWebhook.outcome)).all())


def last_delivery(channel: SalesChannel) -> ChannelWebhook | None:
    return db.session.scalar(select(ChannelWebhook).where(ChannelWebhook.channel_id == channel.id)
                             .order_by(ChannelWebhook.id.desc()).limit(1))
