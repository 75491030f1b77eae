"""Shopify's webhooks: the signature, the shop domain, and the payloads of orders/paid (an Order, read as an
ExternalOrder), orders/cancelled (an Order with cancelled_at) and refunds/create (a Refund)."""
import base64
import hashlib
import hmac
import re

from portal.channels.common import (
    Buyer, ExternalCancellation, ExternalLine, ExternalOrder, ExternalRefund, PayloadError, RefundLine,
    attendees_from_properties, currency, identifier, line_items, listed, money, quantity, refund_units, required_id,
    text, timestamp,
)
from portal.channels import consent
from portal.channels.models import SHOPIFY

TOPIC = "orders/paid"
CANCELLED_TOPIC = "orders/cancelled"
REFUND_TOPIC = "refunds/create"
TOPICS = (TOPIC, CANCELLED_TOPIC, REFUND_TOPIC)
# Order.cancel_reason, as the Shopify admin words it when staff cancel an order.
CANCEL_REASONS = {"customer": "Customer changed or canceled order", "fraud": "Fraudulent order",
                  "inventory": "Items unavailable", "declined": "Payment declined", "staff": "Staff error",
                  "other": "Other"}
_SHOP = re.compile(r"[a-z0-9][a-z0-9-]{0,60}\.myshopify\.com")
_GID = re.compile(r"gid://shopify/\w+/(\d+)")


def normalize_shop(value: str | None) -> str:
    """ "https://Demo.myshopify.com/admin" → "demo.myshopify.com"; "" when it is not a myshopify.com domain."""
    value = (value or "").strip().lower()
    value = re.sub(r"^https?://", "", value).split("/", 1)[0]
    return value if _SHOP.fullmatch(value) else ""


def normalize_id(value: str) -> str:
    """Accept "7513594" or "gid://shopify/ProductVariant/7513594" (the admin's URL or GraphQL id)."""
    value = value.strip()
    match = _GID.fullmatch(value)
    return match.group(1) if match else value


def signature(body: bytes, secret: str) -> str:
    """X-Shopify-Hmac-Sha256: the base64 HMAC-SHA256 of the raw body, keyed with the app's secret."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def verify(body: bytes, secret: str | None, header: str | None) -> bool:
    if not secret or not header:
        return False
    return hmac.compare_digest(signature(body, secret).encode(), header.strip().encode())


def parse_order(payload: dict) -> ExternalOrder:
    """The documented Order resource, as Shopify sends it with orders/paid."""
    if not isinstance(payload, dict) or "id" not in payload or not isinstance(payload.get("line_items"), list):
        raise PayloadError("this is not a Shopify order: it has no id or no line_items")
    customer = payload.get("customer") if isinstance(payload.get("customer"), dict) else {}
    billing = payload.get("billing_address") if isinstance(payload.get("billing_address"), dict) else {}
    shipping = payload.get("shipping_address") if isinstance(payload.get("shipping_address"), dict) else {}
    buyer = Buyer(
        first_name=text(customer.get("first_name") or billing.get("first_name") or shipping.get("first_name")),
        last_name=text(customer.get("last_name") or billing.get("last_name") or shipping.get("last_name")),
        email=text(payload.get("email") or payload.get("contact_email") or customer.get("email"), 254),
        phone=text(payload.get("phone") or customer.get("phone") or billing.get("phone"), 40),
    )
    order_currency = currency(payload.get("currency"))
    lines = []
    for position, item, what, count in line_items(payload["line_items"]):
        allocations = item.get("discount_allocations")
        if isinstance(allocations, list) and allocations:
            discount = sum((money(a.get("amount") if isinstance(a, dict) else None, f"{what}'s discount")
                            for a in allocations), start=money(0, what))
        else:
            discount = money(item.get("total_discount"), f"{what}'s discount", required=False)
        properties = item.get("properties")
        if isinstance(properties, dict):
            pairs = list(properties.items())
        else:
            pairs = [(p.get("name", ""), p.get("value", "")) for p in listed(properties, f"{what}'s properties")
                     if isinstance(p, dict)]
        lines.append(ExternalLine(
            line_id=text(item.get("id"), 64) or str(position),
            title=text(item.get("name") or item.get("title")),
            product_id=identifier(item.get("product_id")),
            variant_id=identifier(item.get("variant_id")),
            quantity=count,
            unit_price=money(item.get("price"), f"{what}'s price"),
            discount=discount,
            attendees=attendees_from_properties(pairs, count),
        ))
    other = []
    tax = money(payload.get("total_tax"), "total_tax", required=False)
    if tax and not payload.get("taxes_included"):
        other.append(f"Shopify also charged {order_currency} {tax} of tax, which is not part of the ticket prices.")
    shipping_lines = listed(payload.get("shipping_lines"), "shipping_lines")
    shipping_total = sum((money(s.get("price"), "shipping") for s in shipping_lines if isinstance(s, dict)),
                         start=money(0, "shipping"))
    if shipping_total:
        other.append(f"Shopify also charged {order_currency} {shipping_total} of shipping, which is not part of "
                     "the ticket prices.")
    codes = [text(c.get("code"), 40) for c in listed(payload.get("discount_codes"), "discount_codes")
             if isinstance(c, dict)]
    return ExternalOrder(
        platform=SHOPIFY, order_id=text(payload["id"], 64), name=text(payload.get("name"), 64) or text(payload["id"]),
        currency=order_currency, placed_at=timestamp(payload.get("processed_at") or payload.get("created_at")),
        buyer=buyer, lines=lines, discount_codes=[c for c in codes if c], is_test=payload.get("test") is True,
        other_charges=other, marketing=consent.shopify(payload, customer),
    )


def parse_cancellation(payload: dict) -> ExternalCancellation:
    """orders/cancelled: the Order resource, with cancelled_at set and Shopify's cancel_reason."""
    if not isinstance(payload, dict):
        raise PayloadError("this is not a Shopify order")
    order_id = required_id(payload.get("id"), "the order's id")
    cancelled_at = payload.get("cancelled_at")
    if not isinstance(cancelled_at, str) or not cancelled_at.strip():
        raise PayloadError("the order has no cancelled_at, so it is not a cancelled order")
    code = text(payload.get("cancel_reason"), 60)
    reason = CANCEL_REASONS.get(code.lower(), code) or "Cancelled in Shopify"
    return ExternalCancellation(platform=SHOPIFY, order_id=order_id, name=text(payload.get("name"), 64), reason=reason)


def parse_refund(payload: dict) -> ExternalRefund:
    """refunds/create: the Refund resource, {id, order_id, note, refund_line_items[], transactions[], ...}."""
    if not isinstance(payload, dict):
        raise PayloadError("this is not a Shopify refund")
    refund_id = required_id(payload.get("id"), "the refund's id")
    order_id = required_id(payload.get("order_id"), "the refund's order_id")
    lines, units = [], 0
    for position, item in enumerate(listed(payload.get("refund_line_items"), "refund_line_items"), start=1):
        what = f"refund line item {position}"
        if not isinstance(item, dict):
            raise PayloadError(f"{what} is not an object")
        count = quantity(item.get("quantity"), f"{what}'s quantity")
        units = refund_units(count, units)
        line_item = item.get("line_item") if isinstance(item.get("line_item"), dict) else {}
        line_id = identifier(item.get("line_item_id")) or identifier(line_item.get("id"))
        if line_id is None:
            raise PayloadError(f"{what} has no line_item_id")
        subtotal = item.get("subtotal")
        lines.append(RefundLine(
            line_id=line_id, quantity=count, product_id=identifier(line_item.get("product_id")),
            variant_id=identifier(line_item.get("variant_id")),
            title=text(line_item.get("name") or line_item.get("title")),
            subtotal=None if subtotal is None else money(subtotal, f"{what}'s subtotal"),
        ))
    amount = None
    for position, transaction in enumerate(listed(payload.get("transactions"), "transactions"), start=1):
        if not isinstance(transaction, dict):
            raise PayloadError(f"transaction {position} is not an object")
        if text(transaction.get("kind"), 20).lower() != "refund":
            continue
        given = money(transaction.get("amount"), f"transaction {position}'s amount")
        # A failed or errored transaction gave nothing back; a pending one is on its way.
        ok = text(transaction.get("status"), 20).lower() not in ("failure", "error")
        amount = (amount if amount is not None else money(0, "amount")) + (given if ok else 0)
    return ExternalRefund(platform=SHOPIFY, refund_id=refund_id, order_id=order_id, amount=amount, lines=lines,
                          reason=text(payload.get("note"), 500) or "Refunded in Shopify")
