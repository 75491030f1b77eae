"""Sales channels on the Integrations page: connect a Shopify store or Wix site, map products, details, disconnect."""
from flask import Blueprint, abort, flash, request
from flask_login import current_user, login_required
from sqlalchemy import select

from portal.channels import forms, manage, service
from portal.channels.models import (
    CONNECTED, NEEDS_ATTENTION, OUTCOMES, PENDING, PLATFORM_NAMES, SHOPIFY, UNMAPPED, ChannelWebhook, SalesChannel,
)
from portal.extensions import db
from portal.htmx import render, see_other
from portal.sync import metric_guard
from portal.sync.connection import connection_for

bp = Blueprint("channels", __name__, url_prefix="/manage/channels")
LOG_LIMIT = 100


def get_channel_or_404(channel_id: int) -> SalesChannel:
    """The current organizer's channel; anyone else's is simply not found."""
    channel = db.session.get(SalesChannel, channel_id)
    if channel is None or channel.organizer_id != current_user.id:
        abort(404)
    return channel


def klaviyo_connected(organizer_id: int) -> bool:
    connection = connection_for(organizer_id)
    return connection is not None and connection.is_active


def channel_cards() -> list[dict]:
    return manage.cards(current_user.id)


@bp.app_context_processor
def inject_cards():
    # A function, so only the Integrations page (which includes the section) pays for the queries.
    return {"sales_channel_cards": channel_cards}


@bp.context_processor
def under_integrations():
    """These pages belong to the Integrations tab of the navigation."""
    return {"nav_section": "integrations"}


@bp.route("/<any(shopify, wix):platform>/connect", methods=["GET", "POST"])
@login_required
def connect(platform):
    """Connect a store (or change its domain, secret or key)."""
    channel = service.channel_for(current_user.id, platform)
    if request.method in ("GET", "HEAD"):
        values = {}
        if channel is not None:
            values = {"shop_domain": channel.account} if platform == SHOPIFY else {"instance_id": channel.account}
        return render("channels/connect.html", platform=platform, name=PLATFORM_NAMES[platform], channel=channel,
                      values=values, errors={}, webhook_url=service.webhook_url(platform))
    form = forms.read_connect(platform, request.form, channel)
    if form.errors:
        return render("channels/connect.html", platform=platform, name=PLATFORM_NAMES[platform], channel=channel,
                      values=form.values, errors=form.errors, webhook_url=service.webhook_url(platform)), 422
    saved = manage.save_connection(current_user.id, platform, form)
    channel = saved.channel
    if platform == SHOPIFY and saved.first_time and klaviyo_connected(current_user.id):
        metric_guard.request_check(current_user.id)  # Klaviyo's own Shopify integration may send Placed Order too
    if saved.first_time:
        proof = ("click Send test notification next to one of them" if platform == SHOPIFY
                 else "make Wix send one of the events")
        flash(f"Saved. {channel.account} is pending until it proves it is yours: register the webhook URL shown on "
              f"the card in {channel.name}, then {proof}. The first webhook signed with the "
              f"{'secret' if platform == SHOPIFY else 'public key'} you entered connects it; nothing is imported "
              f"before that. The claim expires on {channel.claim_expires_at:%d %b %Y}.", "success")
    else:
        flash(f"{channel.name} connection saved; nothing changed.", "success")
    return see_other("integrations.index")


@bp.get("/<int:channel_id>")
@login_required
def details(channel_id):
    """View Details: the last webhook received, counts by outcome, and the log with every reject's reason."""
    channel = get_channel_or_404(channel_id)
    outcome = request.args.get("outcome", "")
    query = select(ChannelWebhook).where(ChannelWebhook.channel_id == channel.id)
    if outcome == "attention":
        query = query.where(ChannelWebhook.outcome.in_(NEEDS_ATTENTION))
    elif outcome in OUTCOMES:
        query = query.where(ChannelWebhook.outcome == outcome)
    else:
        outcome = ""
    entries = list(db.session.scalars(query.order_by(ChannelWebhook.id.desc()).limit(LOG_LIMIT)))
    orders = {entry.id: service.orders_of(entry) for entry in entries if entry.order_id}
    return render("channels/details.html", block="log", channel=channel, entries=entries, orders=orders,
                  stats=service.stats(channel), outcome=outcome, outcomes=OUTCOMES,
                  last=service.last_delivery(channel), webhook_url=service.webhook_url(channel.platform),
                  mapped=len(channel.mappings))


@bp.route("/<int:channel_id>/products", methods=["GET", "POST"])
@login_required
def products(channel_id):
    """Map the store's products or variants to the organizer's ticket types."""
    channel = get_channel_or_404(channel_id)
    ticket_types = manage.ticket_types_of(current_user.id)
    if request.method == "POST":
        form = forms.read_mappings(channel, request.form, ticket_types)
        if not form.errors:
            saved = manage.save_mappings(channel, form.rows)
            flash(f"Saved: {saved} ticket type(s) mapped to {channel.name} products.", "success")
            return see_other("channels.products", channel_id=channel.id)
        values, errors, status = form.values, form.errors, 422
    else:
        values = {}
        for mapping in channel.mappings:
            values[f"product-{mapping.ticket_type_id}"] = mapping.product_id or ""
            values[f"variant-{mapping.ticket_type_id}"] = mapping.variant_id or ""
        errors, status = {}, 200
    events: dict[int, tuple] = {}
    for ticket_type in ticket_types:
        events.setdefault(ticket_type.event_id, (ticket_type.event, []))[1].append(ticket_type)
    return render("channels/products.html", channel=channel, events=list(events.values()), values=values,
                  errors=errors, unmapped=manage.unmapped_seen(channel)), status


@bp.post("/<int:channel_id>/log/<int:entry_id>/import")
@login_required
def import_again(channel_id, entry_id):
    """Import the items a delivery left out, after mapping them."""
    channel = get_channel_or_404(channel_id)
    entry = db.session.get(ChannelWebhook, entry_id)
    if entry is None or entry.channel_id != channel.id or entry.outcome != UNMAPPED or not entry.skipped \
            or not entry.payload:
        abort(404)
    created = service.import_again(entry)
    if created is None:
        flash("These items were just imported by someone else.", "info")
    elif not created:
        flash("Still nothing to import: map the items listed in the entry to ticket types first.", "warning")
    else:
        flash("Imported: " + ", ".join(f"order #{order.id}" for order in created) + ".", "success")
    return see_other("channels.details", channel_id=channel.id)


@bp.route("/<int:channel_id>/disconnect", methods=["GET", "POST"])
@login_required
def disconnect(channel_id):
    """Stop importing from this store (with a confirmation page first)."""
    channel = get_channel_or_404(channel_id)
    if channel.status not in (CONNECTED, PENDING):
        abort(404)
    if request.method in ("GET", "HEAD"):
        return render("channels/disconnect.html", channel=channel)
    was_pending = channel.status == PENDING
    channel.disconnect()
    db.session.commit()
    if was_pending:
        flash(f"Your claim on {channel.account} is withdrawn. Your product mappings are kept.", "success")
    else:
        flash(f"{channel.name} disconnected: its webhooks are refused from now on. Orders already imported stay, and "
              "so do your product mappings. Delete the webhook in your store too.", "success")
    return see_other("integrations.index")
