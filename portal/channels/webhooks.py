"""The endpoints Shopify and Wix deliver paid orders, cancellations and refunds to. Server to server:
authenticated by signature, not CSRF.

Every answer is JSON. 401 bad signature, 404 unknown store, 400 malformed body, 413 too large: nothing is
imported or changed. A replay gets 200 and changes nothing; so does a delivery the portal has nothing to do with,
and a cancellation or refund of a store order that was never imported.

A delivery belongs to the claim on its store whose secret or key verifies it (ownership.route); the first one
verified with a pending claim's key proves that claim, and is then handled like any other.
"""
import json

from flask import Blueprint, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from portal.channels import lifecycle, ownership, service, shopify, wix
from portal.channels.common import PayloadError, text
from portal.channels.models import IGNORED, REJECTED, SHOPIFY, WIX
from portal.extensions import csrf

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
csrf.exempt(bp)


def answer(status: int, message: str, **extra):
    return jsonify({"message": message, **extra}), status


def done(entry):
    return answer(200, entry.detail_lines[0] if entry.detail_lines else entry.outcome, outcome=entry.outcome,
                  log_id=entry.id, order_id=entry.order_id)


def unproved(claim) -> str:
    if not claim.is_pending:
        return ""
    key = "secret" if claim.platform == SHOPIFY else "public key"
    return (f" Your claim stays pending until a webhook signed with the {key} you saved arrives; it expires "
            f"{claim.claim_expires_at:%d %b %Y}.")


@bp.errorhandler(RequestEntityTooLarge)
def too_large(error):
    return answer(413, "The body is larger than the portal accepts (1 MB).")


@bp.post("/shopify", endpoint="shopify")
def shopify_webhook():
    """orders/paid, orders/cancelled and refunds/create from a connected Shopify store."""
    body = request.get_data(cache=False)
    shop = shopify.normalize_shop(request.headers.get("X-Shopify-Shop-Domain"))
    topic = text(request.headers.get("X-Shopify-Topic"), 120)
    signature = request.headers.get("X-Shopify-Hmac-Sha256")
    found = ownership.route(SHOPIFY, shop, lambda claim: shopify.verify(body, claim.secret, signature))
    if not found.claims:
        return answer(404, "No connected Shopify store has this shop domain.")
    channel = found.channel
    if channel is None:
        for claim in found.claims:
            service.record(claim, REJECTED, "The signature (X-Shopify-Hmac-Sha256) does not match the secret saved in "
                           "the portal. Check that the secret is the one your webhooks are signed with."
                           + unproved(claim), topic=topic)
        return answer(401, "The signature does not match.")
    webhook_id = text(request.headers.get("X-Shopify-Webhook-Id"), 200) or None
    if earlier := service.seen(channel, webhook_id):
        return done(service.duplicate_of(channel, earlier, topic, webhook_id))
    if topic not in shopify.TOPICS:
        return done(service.record(channel, IGNORED, f"Topic {topic[:60] or '(none)'!r} is not one the portal "
                                   f"handles ({', '.join(shopify.TOPICS)}).", topic=topic, webhook_id=webhook_id))
    try:
        payload = json.loads(body)
        if not isinstance(payload, dict):
            raise ValueError
    except (ValueError, RecursionError):
        service.record(channel, REJECTED, "The body is not a JSON object.", topic=topic)
        return answer(400, "The body is not a JSON object.")
    what = {shopify.TOPIC: "order", shopify.CANCELLED_TOPIC: "cancelled order", shopify.REFUND_TOPIC: "refund"}[topic]
    try:
        if topic == shopify.TOPIC:
            parsed = shopify.parse_order(payload)
        elif topic == shopify.CANCELLED_TOPIC:
            parsed = shopify.parse_cancellation(payload)
        else:
            parsed = shopify.parse_refund(payload)
    except PayloadError as exc:
        service.record(channel, REJECTED, f"The {what} could not be read: {exc}.", topic=topic)
        return answer(400, f"The {what} could not be read: {exc}.")
    if topic == shopify.CANCELLED_TOPIC:
        return done(lifecycle.cancel(channel, parsed, topic=topic, webhook_id=webhook_id))
    if topic == shopify.REFUND_TOPIC:
        return done(lifecycle.refund(channel, parsed, topic=topic, webhook_id=webhook_id))
    entry = service.import_order(channel, parsed, topic=topic, webhook_id=webhook_id,
                                 payload=body.decode("utf-8", errors="replace"))
    return done(entry)


@bp.post("/wix", endpoint="wix")
def wix_webhook():
    """eCommerce Payment Status Updated, Order Canceled and Refund Completed from a connected Wix site (signed JWTs)."""
    body = request.get_data(cache=False)
    try:
        delivery = wix.read(body)
    except wix.MalformedToken as exc:
        return answer(400, f"Malformed: {exc}.")
    problems: dict[int, str] = {}

    def verifies(claim) -> bool:
        problems[claim.id] = delivery.verify(claim.secret)
        return problems[claim.id] is None

    found = ownership.route(WIX, delivery.instance_id, verifies)
    if not found.claims:
        return answer(404, "No connected Wix site has this instance id.")
    channel = found.channel
    topic = delivery.event_type
    if channel is None:
        for claim in found.claims:
            service.record(claim, REJECTED, f"Not accepted: {problems.get(claim.id) or 'no key is saved'}."
                           + unproved(claim), topic=topic)
        # The most telling reason: a token one of the keys verified, but expired, says more than a mismatch.
        reasons = [problems[claim.id] for claim in found.claims if problems.get(claim.id)]
        problem = next((r for r in reasons if "does not match" not in r), reasons[0] if reasons else "no key is saved")
        return answer(401, f"Not accepted: {problem}.")
    if delivery.event is None:
        service.record(channel, REJECTED, "The event inside the token is not JSON.", topic=topic)
        return answer(400, "The event inside the token is not JSON.")
    webhook_id = text(delivery.event.get("id"), 200) or None
    if earlier := service.seen(channel, webhook_id):
        return done(service.duplicate_of(channel, earlier, topic, webhook_id))
    kind = wix.kind_of(delivery)
    if kind is None:
        handled = ", ".join((wix.EVENT_TYPE, wix.CANCELED_EVENT, wix.REFUND_EVENT))
        return done(service.record(channel, IGNORED, f"Event {topic[:80] or '(none)'!r} is not one the portal "
                                   f"handles ({handled}).", topic=topic, webhook_id=webhook_id))
    what = {wix.EVENT_TYPE: "order", wix.CANCELED_EVENT: "cancelled order", wix.REFUND_EVENT: "refund"}[kind]
    try:
        if kind == wix.CANCELED_EVENT:
            return done(lifecycle.cancel(channel, wix.parse_cancellation(delivery.event), topic=topic,
                                         webhook_id=webhook_id))
        if kind == wix.REFUND_EVENT:
            return done(lifecycle.refund(channel, wix.parse_refund(delivery.event), topic=topic,
                                         webhook_id=webhook_id))
        order = wix.order_of(delivery.event)
        status = order.get("paymentStatus")
        if status in wix.REFUNDED_STATUSES:
            return done(service.record(
                channel, IGNORED, f"Order {text(order.get('number'), 40)}: payment status is {status}. Refunds are "
                f"recorded from Refund Completed ({wix.REFUND_EVENT}), which says what was refunded; subscribe to "
                "it too.", topic=topic, webhook_id=webhook_id))
        if status != wix.PAID:
            return done(service.record(
                channel, IGNORED, f"Order {text(order.get('number'), 40)}: payment status is "
                f"{text(status, 40) or 'missing'}; it is imported once it is PAID.", topic=topic, webhook_id=webhook_id))
        external = wix.parse_order(order)
    except PayloadError as exc:
        service.record(channel, REJECTED, f"The {what} could not be read: {exc}.", topic=topic)
        return answer(400, f"The {what} could not be read: {exc}.")
    entry = service.import_order(channel, external, topic=topic, webhook_id=webhook_id, payload=json.dumps(order))
    return done(entry)
