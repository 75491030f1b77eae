"""The history backfill's list subscriptions: past orders whose purchaser agreed to marketing are subscribed with
historical_import: true and the time they agreed, so old buyers get no confirmation e-mail and no "Added to List"
flow. Called by portal.sync.backfill for each chunk of orders, in the chunk's transaction.

An order whose subscription Klaviyo already has (or that waits in the outbox) is skipped; one a Disconnect
cancelled before it went is sent again, as historical.
"""
from flask import current_app
from sqlalchemy import select

from portal.consent.models import ListSettings, OrderConsent
from portal.extensions import db
from portal.klaviyo.subscriptions import build_subscription
from portal.sync import outbox
from portal.sync.models import CANCELLED, SUBSCRIPTION, BackfillRun, KlaviyoConnection, OutboxEvent

FEATURE = "subscriptions"


def queue_past_subscriptions(run: BackfillRun, connection: KlaviyoConnection, orders: list) -> set[int]:
    """Queue the historical subscriptions of these orders (only while list subscriptions are on). Returns the
    orders it queued one for."""
    queued_for = set()
    if FEATURE not in connection.feature_list or not orders:
        return queued_for
    settings = db.session.scalar(select(ListSettings).where(ListSettings.organizer_id == run.organizer_id))
    records = {record.order_id: record for record in db.session.scalars(
        select(OrderConsent).where(OrderConsent.order_id.in_([order.id for order in orders])))}
    built = []
    for order in orders:
        record = records.get(order.id)
        if record is None or not record.agreed:
            continue
        if order.is_test and not (settings and settings.include_test_orders):
            continue
        region = order.event.country or current_app.config["DEFAULT_PHONE_REGION"]
        event = build_subscription(record.as_consent(order, region), historical=True).event
        if event is not None:
            built.append((order.id, event))
    if not built:
        return queued_for
    existing = dict(db.session.execute(select(OutboxEvent.unique_id, OutboxEvent.status).where(
        OutboxEvent.organizer_id == run.organizer_id,
        OutboxEvent.unique_id.in_([event.unique_id for _, event in built]))).all())
    for order_id, event in built:
        status = existing.get(event.unique_id)
        if status is None:
            if outbox.add_rows(run.organizer_id, order_id, [event], connection, backfill=True, kind=SUBSCRIPTION,
                               backfill_run_id=run.id):
                queued_for.add(order_id)
            run.events_queued += 1
        elif status == CANCELLED:
            if outbox.requeue_as_past(run.organizer_id, event, run.id):
                queued_for.add(order_id)
            run.events_queued += 1
        else:
            run.events_skipped += 1
    return queued_for
