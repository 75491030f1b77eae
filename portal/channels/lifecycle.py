"""What a store says happened to an order after it was paid: it was cancelled, or money was given back. Both are
applied to the portal order(s) imported from it through the order page's own actions (portal.orders.lifecycle),
so Klaviyo gets the same Cancelled Order, Refunded Order and Cancelled Registration events, and both are logged
like every delivery.

One store order may have become several portal orders, one per event: a cancellation cancels each, and a
refund is shared among those that hold the tickets it was for. The store's refund id is recorded on each portal
refund, so the same refund arriving again, under any webhook id, is refunded once.
"""
import logging
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal

from sqlalchemy import select

from portal.channels import service
from portal.channels.common import ExternalCancellation, ExternalRefund, PayloadError
from portal.channels.models import (
    CANCELLED, CREATED, DUPLICATE, IGNORED, OVERSOLD, REFUNDED, REJECTED, UNKNOWN_ORDER, UNMAPPED, ChannelWebhook,
    SalesChannel,
)
from portal.extensions import db
from portal.orders import lifecycle
from portal.orders.models import Order, Refund, Ticket

log = logging.getLogger("portal.channels")
CENT = Decimal("0.01")
ZERO = Decimal("0")


def _name(channel: SalesChannel, external_order_id: str, given: str = "") -> str:
    """What the store calls the order ("#1001"), from the delivery or from the one that imported it."""
    if given:
        return given
    first = service.first_import(channel, external_order_id)
    return (first.external_order_name if first is not None else None) or ""


def _label(channel: SalesChannel, external_order_id: str, name: str) -> str:
    return f"{channel.name} order {name or external_order_id}"


def _unknown(channel: SalesChannel, external_order_id: str, name: str, what: str, *, topic: str,
             webhook_id: str | None) -> ChannelWebhook:
    """A cancellation or refund of a store order that never became a portal order: kept in the log, nothing else."""
    lines = [f"{what} {_label(channel, external_order_id, name)}, which the portal never imported: nothing was "
             "changed."]
    first = service.first_import(channel, external_order_id)
    if first is not None and first.outcome == UNMAPPED:
        lines.append(f"It arrived with no item mapped to a ticket type (log entry #{first.id}). If you import it "
                     "again, cancel or refund the new portal order on its order page.")
    else:
        lines.append("It may have been placed before the store was connected, or held no tickets.")
    return service.record(channel, UNKNOWN_ORDER, "\n".join(lines), topic=topic, webhook_id=webhook_id,
                          order_ref=(external_order_id, name or None))


def cancel(channel: SalesChannel, cancellation: ExternalCancellation, *, topic: str,
           webhook_id: str | None) -> ChannelWebhook:
    """Cancel every portal order of a store order the store cancelled. The money comes as a refund of its own."""
    name = _name(channel, cancellation.order_id, cancellation.name)
    orders = service.orders_for(channel, cancellation.order_id)
    if not orders:
        return _unknown(channel, cancellation.order_id, name, "Cancellation of", topic=topic, webhook_id=webhook_id)
    lines = [f"{_label(channel, cancellation.order_id, name)} was cancelled in {channel.name}: "
             f"{cancellation.reason}."]
    done = already = 0
    for order in orders:
        order_id, tickets = order.id, len(order.valid_tickets)
        try:
            lifecycle.cancel_order(order, refund=False, include_fees=False, reason=cancellation.reason,
                                   by=channel.name, source=channel.platform)
        except lifecycle.AlreadyDone:
            already += 1
            lines.append(f"Order #{order_id} was already cancelled; nothing more was changed.")
        except lifecycle.Refused as exc:
            lines.append(f"Order #{order_id} was not cancelled: {exc}")
        else:
            done += 1
            lines.append(f"Order #{order_id} cancelled: {tickets} ticket(s) released. What {channel.name} gives "
                         "back arrives as a refund of its own.")
    outcome = CANCELLED if done else (DUPLICATE if already == len(orders) else REJECTED)
    log.info("channel=%s store order=%s cancelled: orders %s outcome=%s", channel.id, cancellation.order_id,
             [o.id for o in orders], outcome)
    return service.record(channel, outcome, "\n".join(lines), topic=topic, webhook_id=webhook_id,
                          order_ref=(cancellation.order_id, name or None), order_id=orders[0].id)


# --- refunds ---------------------------------------------------------------------------------------------------


@dataclass
class _Share:
    """The part of a store refund that one portal order takes."""

    order: Order
    tickets: list[Ticket] = field(default_factory=list)  # the tickets it is for, valid ones first
    room: Decimal = ZERO  # the most it can take: what those tickets (or the order) can still give back
    amount: Decimal = ZERO


@dataclass
class _Plan:
    shares: list[_Share]
    total: Decimal | None  # what the store's refund gave back for tickets; None: it does not say
    notes: list[str]


def _imported_lines(channel: SalesChannel, external_order_id: str) -> dict[str, tuple[str | None, str | None, str]]:
    """The store order's line items as imported, by line id: (product id, variant id, title). A refund names only
    the line (Wix), or may name a product that no longer exists (Shopify)."""
    found = {}
    entries = db.session.scalars(select(ChannelWebhook.payload).where(
        ChannelWebhook.channel_id == channel.id, ChannelWebhook.external_order_id == external_order_id,
        ChannelWebhook.outcome.in_((CREATED, UNMAPPED, OVERSOLD)), ChannelWebhook.payload.is_not(None)))
    for payload in entries:
        try:
            order = service.parse_stored(channel.platform, payload)
        except (PayloadError, ValueError):
            continue
        for line in order.lines:
            found.setdefault(line.line_id, (line.product_id, line.variant_id, line.title))
    return found


def _left(ticket: Ticket) -> Decimal:
    return max(ticket.final_price + ticket.fee - ticket.refunded_amount, ZERO)


def _plan(channel: SalesChannel, orders: list[Order], external: ExternalRefund) -> _Plan | str:
    """Which tickets of which portal order the refund was for, and how much each order takes; or why none."""
    imported = _imported_lines(channel, external.order_id)
    mappings = [m for m in channel.mappings if m.ticket_type is not None]
    shares = {order.id: _Share(order) for order in orders}
    taken: set[str] = set()
    notes: list[str] = []
    ticket_lines, not_tickets, subtotals = 0, ZERO, ZERO
    subtotals_known = True
    for line in external.lines:
        if line.quantity <= 0:
            continue
        product_id, variant_id, title = line.product_id, line.variant_id, line.title
        if product_id is None and variant_id is None and line.line_id in imported:
            product_id, variant_id, imported_title = imported[line.line_id]
            title = title or imported_title
        title = title or f"line item {line.line_id}"
        mapping = service.find_mapping(mappings, product_id, variant_id)
        if mapping is None:
            not_tickets += line.subtotal or ZERO
            notes.append(f"Not a ticket (not mapped to a ticket type): {line.quantity} × {title}.")
            continue
        ticket_lines += 1
        candidates = sorted((t for order in orders for t in order.tickets
                             if t.ticket_type_id == mapping.ticket_type_id and t.id not in taken),
                            key=lambda t: (not t.is_valid, t.order_id, t.position))
        chosen = candidates[:line.quantity]
        if len(chosen) < line.quantity:
            notes.append(f"{line.quantity} × {title}: the portal orders hold only {len(chosen)} such ticket(s).")
        for ticket in chosen:
            taken.add(ticket.id)
            shares[ticket.order_id].tickets.append(ticket)
        if line.subtotal is None:
            subtotals_known = False
        subtotals += line.subtotal or ZERO
    if external.lines and not ticket_lines:
        return "it is only for items that are not tickets"
    if ticket_lines and not taken:
        return "the portal orders hold none of the tickets it is for"
    targets = [share for share in shares.values() if share.tickets] or list(shares.values())
    for share in targets:
        # The tickets' orders take what those tickets can still give back; a refund of an amount, what is left.
        can = sum((_left(t) for t in share.tickets), ZERO) if share.tickets else share.order.refundable
        share.room = min(can, share.order.refundable)
    total = None
    if external.amount is not None:
        total = max(external.amount - not_tickets, ZERO)  # the store's transactions, less what was not tickets
    elif ticket_lines and subtotals_known:
        total = subtotals
    return _Plan(_split(total, targets), total, notes)


def _split(total: Decimal | None, targets: list[_Share]) -> list[_Share]:
    """Share the total in proportion to what each order can take, never more; cents to the first."""
    room = sum((share.room for share in targets), ZERO)
    total = room if total is None else min(total, room)
    if total <= 0:
        return []
    for share in targets:
        share.amount = (total * share.room / room).quantize(CENT, rounding=ROUND_DOWN)
    rest = total - sum((share.amount for share in targets), ZERO)
    for share in targets:
        extra = min(rest, share.room - share.amount)
        share.amount += extra
        rest -= extra
    return [share for share in targets if share.amount > 0]


def recorded_on(orders: list[Order], external: ExternalRefund) -> int | None:
    """The portal order this store refund was already recorded on, if any."""
    return db.session.scalar(select(Refund.order_id).where(Refund.order_id.in_([o.id for o in orders]),
                                                           Refund.external_ref == external.ref).limit(1))


def refund(channel: SalesChannel, external: ExternalRefund, *, topic: str, webhook_id: str | None) -> ChannelWebhook:
    """Record a store refund on the portal order(s) it was for, with their tickets; once per store refund."""
    name = _name(channel, external.order_id)
    orders = service.orders_for(channel, external.order_id)
    what = f"Refund {external.refund_id} of"
    if not orders:
        return _unknown(channel, external.order_id, name, what, topic=topic, webhook_id=webhook_id)
    ref = (external.order_id, name or None)
    lines = [f"{what} {_label(channel, external.order_id, name)} in {channel.name}: {external.reason}."]
    earlier = recorded_on(orders, external)
    if earlier is not None:
        lines.append(f"It was already recorded on order #{earlier}; nothing more was refunded.")
        return service.record(channel, DUPLICATE, "\n".join(lines), topic=topic, webhook_id=webhook_id,
                              order_ref=ref, order_id=earlier)
    plan = _plan(channel, orders, external)
    currency = orders[0].currency
    if isinstance(plan, str) or not plan.shares:
        if isinstance(plan, str):
            outcome, notes, why = IGNORED, [], f"Nothing was refunded in the portal: {plan}."
        elif plan.total is not None and plan.total <= 0:
            outcome, notes, why = IGNORED, plan.notes, "Nothing was refunded in the portal: it gave no money back."
        else:
            outcome, notes = REJECTED, plan.notes
            why = (f"Not recorded: nothing is left to refund for these tickets on order(s) "
                   f"{', '.join(f'#{o.id}' for o in orders)}. The portal refunds at most what was paid, minus "
                   "earlier refunds.")
        return service.record(channel, outcome, "\n".join(lines + [why] + notes), topic=topic,
                              webhook_id=webhook_id, order_ref=ref, order_id=orders[0].id)
    recorded = sum((share.amount for share in plan.shares), ZERO)
    if plan.total is not None and recorded < plan.total:
        lines.append(f"{channel.name} gave back {currency} {plan.total:,.2f} for tickets; {currency} {recorded:,.2f} "
                     "was left to refund on them in the portal, so that is what was recorded.")
    done = already = 0
    first_changed = None
    for share in plan.shares:
        order, order_id = share.order, share.order.id
        ids = [] if order.is_cancelled else [t.id for t in share.tickets if t.is_valid]
        names = ", ".join(t.type_name for t in share.tickets if t.id in ids)
        try:
            made = lifecycle.refund_order(order, ticket_ids=ids, amount=share.amount, include_fees=True,
                                          reason=external.reason, by=channel.name, source=channel.platform,
                                          external_ref=external.ref)
        except lifecycle.AlreadyDone:
            already += 1
            lines.append(f"Order #{order_id}: this refund was already recorded; nothing more was refunded.")
        except lifecycle.Refused as exc:
            lines.append(f"Order #{order_id}: not refunded: {exc}")
        else:
            done += 1
            first_changed = first_changed or order_id
            lines.append(f"Order #{order_id}: refunded {currency} {made.amount:,.2f}"
                         + (f" for {len(ids)} ticket(s) ({names})." if ids else " on the order."))
    outcome = REFUNDED if done else (DUPLICATE if already == len(plan.shares) else REJECTED)
    log.info("channel=%s store refund=%s on orders %s outcome=%s", channel.id, external.ref,
             [share.order.id for share in plan.shares], outcome)
    return service.record(channel, outcome, "\n".join(lines + plan.notes), topic=topic, webhook_id=webhook_id,
                          order_ref=ref, order_id=first_changed or orders[0].id)
