"""The organizer's side of a sales channel: what its card shows, saving a connection, and product mappings."""
import json
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select

from portal.channels import service
from portal.channels.forms import ConnectForm, MappingRow
from portal.channels.models import (
    NEEDS_ATTENTION, PLATFORM_NAMES, PLATFORMS, ChannelMapping, ChannelWebhook, SalesChannel,
)
from portal.events.models import Event, TicketType
from portal.extensions import db
from portal.types import utcnow


def cards(organizer_id: int) -> list[dict]:
    """What the Shopify and Wix cards on the Integrations page show."""
    result = []
    for platform in PLATFORMS:
        channel = service.channel_for(organizer_id, platform)
        card = {"platform": platform, "name": PLATFORM_NAMES[platform], "channel": channel,
                "connected": bool(channel and channel.is_connected), "pending": bool(channel and channel.is_pending),
                "webhook_url": service.webhook_url(platform)}
        if channel is not None:
            card["mapped"] = db.session.scalar(select(func.count()).select_from(ChannelMapping).where(
                ChannelMapping.channel_id == channel.id))
            card["last"] = service.last_delivery(channel)
            card["attention"] = db.session.scalar(select(func.count()).select_from(ChannelWebhook).where(
                ChannelWebhook.channel_id == channel.id, ChannelWebhook.outcome.in_(NEEDS_ATTENTION),
                ChannelWebhook.received_at >= utcnow() - timedelta(days=7)))
        result.append(card)
    return result


@dataclass
class Saved:
    channel: SalesChannel
    first_time: bool  # a new claim, pending until the store proves it; False: a proved connection, unchanged


def save_connection(organizer_id: int, platform: str, form: ConnectForm) -> Saved:
    """Claim a store (pending until its signed webhook arrives), and commit. A proved connection stays proved
    when nothing changes; a new domain or a new secret or key is a new claim that the store must prove again."""
    channel = service.channel_for(organizer_id, platform)
    if channel is not None and channel.is_connected and not channel.changes(form.account, form.secret):
        return Saved(channel, False)
    if channel is None:
        channel = SalesChannel(organizer_id=organizer_id, platform=platform)
        db.session.add(channel)
    channel.connect(form.account, form.secret)
    db.session.commit()
    return Saved(channel, True)


def ticket_types_of(organizer_id: int) -> list[TicketType]:
    """Every ticket type of the organizer's events, newest event first: what store products can map to."""
    return list(db.session.scalars(select(TicketType).join(Event).where(Event.organizer_id == organizer_id)
                                   .order_by(Event.starts_at.desc(), Event.id, TicketType.id)))


def unmapped_seen(channel: SalesChannel) -> list[dict]:
    """Store items that arrived recently without a mapping (and still have none), to help fill in the form."""
    seen, items = set(), []
    mappings = list(channel.mappings)
    entries = db.session.scalars(select(ChannelWebhook.skipped).where(
        ChannelWebhook.channel_id == channel.id, ChannelWebhook.skipped.is_not(None))
        .order_by(ChannelWebhook.id.desc()).limit(50))
    for skipped in entries:
        for item in json.loads(skipped):
            key = (item.get("product_id"), item.get("variant_id"))
            if key not in seen and service.find_mapping(mappings, *key) is None:
                seen.add(key)
                items.append(item)
    return items[:20]


def save_mappings(channel: SalesChannel, rows: list[MappingRow]) -> int:
    """Make the channel's mappings exactly these rows (one per ticket type), and commit. Returns how many."""
    existing = {m.ticket_type_id: m for m in channel.mappings}
    wanted = {row.ticket_type.id: row for row in rows}
    for type_id, mapping in existing.items():
        if type_id not in wanted:
            db.session.delete(mapping)
    for type_id, row in wanted.items():
        mapping = existing.get(type_id)
        if mapping is None:
            mapping = ChannelMapping(channel_id=channel.id, ticket_type_id=type_id)
            db.session.add(mapping)
        mapping.product_id, mapping.variant_id = row.product_id, row.variant_id
    db.session.commit()
    return len(wanted)
