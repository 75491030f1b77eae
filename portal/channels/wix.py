"""Wix's eCommerce webhooks: an RS256 JWT, its nested envelope, and the event inside.

The request body is a JWT signed with the app's private key. Its `data` claim is a JSON string holding
{eventType, instanceId, data}; that `data` is again a JSON string: the event {id, entityFqdn, slug, entityId,
eventTime, actionEvent: {body}}. The bodies read here:

* Payment Status Updated (wix.ecom.v1.order, payment_status_updated): {order, previousPaymentStatus};
* Order Canceled (wix.ecom.v1.order, canceled): {order, restockAllItems, sendOrderCanceledEmail, customMessage};
* Order Transactions Refund Completed (wix.ecom.v1.order_transactions, refund_completed): {orderId, refund: {id,
  transactions: [{paymentId, amount: {amount}, refundStatus}], details: {items: [{lineItemId, quantity}],
  shippingIncluded, reason}}, sideEffects, orderTransactions}.
"""
import base64
import binascii
import json
import re
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from portal.channels.common import (
    Buyer, ExternalCancellation, ExternalLine, ExternalOrder, ExternalRefund, PayloadError, RefundLine,
    attendees_from_properties, currency, identifier, line_items, listed, money, quantity, refund_units, required_id,
    text, timestamp,
)
from portal.channels import consent
from portal.channels.models import WIX

EVENT_TYPE = "wix.ecom.v1.order_payment_status_updated"
CANCELED_EVENT = "wix.ecom.v1.order_canceled"
REFUND_EVENT = "wix.ecom.v1.order_transactions_refund_completed"
# The inner event names itself by entity and slug, for a delivery whose envelope has no eventType.
_BY_SLUG = {("wix.ecom.v1.order", "payment_status_updated"): EVENT_TYPE,
            ("wix.ecom.v1.order", "canceled"): CANCELED_EVENT,
            ("wix.ecom.v1.order_transactions", "refund_completed"): REFUND_EVENT}
PAID = "PAID"
REFUNDED_STATUSES = ("FULLY_REFUNDED", "PARTIALLY_REFUNDED")
NO_VARIANT = "00000000-0000-0000-0000-000000000000"  # what Wix sends for a product without options
CLOCK_SKEW = 300


class MalformedToken(ValueError):
    """The body is not a JWT, or its envelope is not Wix's."""


@dataclass
class Delivery:
    """A Wix webhook, read but not yet trusted: check `verify` before using anything in it."""

    header: dict
    claims: dict
    signing_input: bytes
    signature: bytes
    event_type: str
    instance_id: str
    event: dict | None  # the inner event, None when its JSON is malformed

    def verify(self, public_key_pem: str | None) -> str | None:
        """None when the signature is good and the token current, else why not."""
        if not public_key_pem:
            return "no public key is saved for this site"
        if self.header.get("alg") != "RS256":
            return f"the token is signed with {str(self.header.get('alg'))[:20]!r}, not RS256"
        try:
            key = load_public_key(public_key_pem)
            key.verify(self.signature, self.signing_input, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return "the signature does not match the public key saved in the portal"
        expires = self.claims.get("exp")
        if isinstance(expires, (int, float)) and expires + CLOCK_SKEW < time.time():
            return "the token has expired"
        return None


def _b64decode(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise MalformedToken("the body is not a JWT") from None


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def read(body: bytes) -> Delivery:
    """Split the JWT and unwrap the envelope far enough to find the site (instanceId). Raises MalformedToken."""
    try:
        token = body.decode("ascii").strip()
    except UnicodeDecodeError:
        raise MalformedToken("the body is not a JWT") from None
    parts = token.split(".")
    if len(parts) != 3 or not all(re.fullmatch(r"[A-Za-z0-9_-]+", part) for part in parts):
        raise MalformedToken("the body is not a JWT (header.payload.signature)")
    try:
        header = json.loads(_b64decode(parts[0]))
        claims = json.loads(_b64decode(parts[1]))
        envelope = json.loads(claims["data"])
    except (ValueError, KeyError, TypeError, RecursionError):
        raise MalformedToken("the JWT's payload is not JSON with a data claim holding JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict) or not isinstance(envelope, dict):
        raise MalformedToken("the JWT's header or payload is not a JSON object")
    try:
        event = json.loads(envelope["data"]) if isinstance(envelope.get("data"), str) else envelope.get("data")
    except (ValueError, RecursionError):
        event = None
    return Delivery(header=header, claims=claims, signing_input=f"{parts[0]}.{parts[1]}".encode(),
                    signature=_b64decode(parts[2]), event_type=text(envelope.get("eventType"), 120),
                    instance_id=text(envelope.get("instanceId"), 100),
                    event=event if isinstance(event, dict) else None)


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    """An RSA public key from PEM, or from the bare base64 body Wix's dashboard also shows. Raises ValueError."""
    pem = pem.strip()
    if "-----BEGIN" not in pem:
        body = "".join(pem.split())
        pem = "-----BEGIN PUBLIC KEY-----\n" + "\n".join(body[i:i + 64] for i in range(0, len(body), 64)) + \
              "\n-----END PUBLIC KEY-----"
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError("not a PEM public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def normalize_public_key(pem: str) -> str:
    """The key in standard PEM, as stored. Raises ValueError."""
    key = load_public_key(pem)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def sign(claims: dict, private_key: rsa.RSAPrivateKey, kid: str | None = None) -> str:
    """An RS256 JWT, as Wix signs webhooks (for tests and the sample-webhook script)."""
    header = {"alg": "RS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = ".".join(_b64encode(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
    signature = private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64encode(signature)}"


def envelope(event: dict, instance_id: str, event_type: str = EVENT_TYPE, lifetime: int = 3600) -> dict:
    """The JWT claims Wix wraps an event in (the inverse of `read`)."""
    now = int(time.time())
    identity = json.dumps({"identityType": "APP", "appId": "00000000-0000-0000-0000-000000000000"})
    data = json.dumps({"data": json.dumps(event), "instanceId": instance_id, "eventType": event_type,
                       "identity": identity})
    return {"data": data, "iat": now, "exp": now + lifetime}


def kind_of(delivery: Delivery) -> str | None:
    """EVENT_TYPE, CANCELED_EVENT or REFUND_EVENT; None for any other event."""
    if delivery.event_type:
        return delivery.event_type if delivery.event_type in _BY_SLUG.values() else None
    event = delivery.event or {}
    key = (event.get("entityFqdn"), event.get("slug"))
    return _BY_SLUG.get(key) if all(isinstance(part, str) for part in key) else None


def is_payment_event(delivery: Delivery) -> bool:
    return kind_of(delivery) == EVENT_TYPE


def _body(event: dict) -> dict:
    try:
        body = event["actionEvent"]["body"]
    except (KeyError, TypeError):
        raise PayloadError("the event has no actionEvent.body") from None
    if not isinstance(body, dict):
        raise PayloadError("actionEvent.body is not an object")
    return body


def order_of(event: dict) -> dict:
    order = _body(event).get("order")
    if order is None:
        raise PayloadError("the event has no actionEvent.body.order")
    if not isinstance(order, dict):
        raise PayloadError("actionEvent.body.order is not an object")
    return order


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def parse_order(order: dict) -> ExternalOrder:
    """The eCommerce Order object, as Wix sends it inside the webhook."""
    if not isinstance(order, dict) or not order.get("id") or not isinstance(order.get("lineItems"), list):
        raise PayloadError("this is not a Wix order: it has no id or no lineItems")
    buyer_info = _dict(order.get("buyerInfo"))
    contact = _dict(_dict(order.get("billingInfo")).get("contactDetails")) or \
        _dict(_dict(order.get("recipientInfo")).get("contactDetails"))
    buyer = Buyer(first_name=text(contact.get("firstName")), last_name=text(contact.get("lastName")),
                  email=text(buyer_info.get("email"), 254), phone=text(contact.get("phone"), 40))
    order_currency = currency(order.get("currency"))
    lines = []
    for position, item, what, count in line_items(order["lineItems"]):
        reference = _dict(item.get("catalogReference"))
        options = _dict(reference.get("options"))
        variant = identifier(options.get("variantId"))
        pairs = list(_dict(options.get("customTextFields")).items())
        for line in listed(item.get("descriptionLines"), f"{what}'s descriptionLines"):
            if isinstance(line, dict) and isinstance(line.get("plainText"), dict):
                pairs.append((_dict(line.get("name")).get("original", ""), line["plainText"].get("original", "")))
        name = _dict(item.get("productName"))
        base = item.get("priceBeforeDiscounts") or item.get("price")
        lines.append(ExternalLine(
            line_id=text(item.get("id"), 64) or str(position),
            title=text(name.get("original") or name.get("translated")),
            product_id=identifier(reference.get("catalogItemId")),
            variant_id=None if variant == NO_VARIANT else variant,
            quantity=count,
            unit_price=money(base, f"{what}'s price"),
            discount=money(item.get("totalDiscount"), f"{what}'s discount", required=False),
            attendees=attendees_from_properties(pairs, count),
        ))
    summary = _dict(order.get("priceSummary"))
    other = []
    tax = money(summary.get("tax"), "priceSummary.tax", required=False)
    if tax and not order.get("taxIncludedInPrices"):
        other.append(f"Wix also charged {order_currency} {tax} of tax, which is not part of the ticket prices.")
    shipping = money(summary.get("shipping"), "priceSummary.shipping", required=False)
    if shipping:
        other.append(f"Wix also charged {order_currency} {shipping} of shipping, which is not part of the ticket prices.")
    codes = [text(_dict(d.get("coupon")).get("code"), 40)
             for d in listed(order.get("appliedDiscounts"), "appliedDiscounts") if isinstance(d, dict)]
    return ExternalOrder(
        platform=WIX, order_id=text(order["id"], 64), name=text(order.get("number"), 64) or text(order["id"], 64),
        currency=order_currency, placed_at=timestamp(order.get("createdDate")), buyer=buyer, lines=lines,
        discount_codes=[c for c in codes if c], other_charges=other, marketing=consent.wix(order),
    )


def parse_cancellation(event: dict) -> ExternalCancellation:
    """Order Canceled: the order (by id and number) and the message sent to the buyer, if any."""
    body = _body(event)
    order = order_of(event)
    order_id = required_id(order.get("id"), "the order's id")
    reason = text(body.get("customMessage"), 500) or "Cancelled in Wix"
    return ExternalCancellation(platform=WIX, order_id=order_id, name=text(order.get("number"), 64), reason=reason)


def parse_refund(event: dict) -> ExternalRefund:
    """Refund Completed: the refund's id, what its SUCCEEDED transactions gave back, its items and reason."""
    body = _body(event)
    order_id = required_id(body.get("orderId"), "actionEvent.body.orderId")
    refund = body.get("refund")
    if not isinstance(refund, dict):
        raise PayloadError("actionEvent.body.refund is missing or not an object")
    refund_id = required_id(refund.get("id"), "the refund's id")
    amount = None
    for position, transaction in enumerate(listed(refund.get("transactions"), "refund.transactions"), start=1):
        if not isinstance(transaction, dict):
            raise PayloadError(f"refund transaction {position} is not an object")
        given = money(transaction.get("amount"), f"refund transaction {position}'s amount")
        # Refund Completed comes once every transaction is final: SUCCEEDED gave money back, FAILED did not.
        ok = transaction.get("refundStatus") == "SUCCEEDED"
        amount = (amount if amount is not None else money(0, "amount")) + (given if ok else 0)
    details = refund.get("details")
    if details is not None and not isinstance(details, dict):
        raise PayloadError("refund.details is not an object")
    details = details or {}
    lines, units = [], 0
    for position, item in enumerate(listed(details.get("items"), "refund.details.items"), start=1):
        what = f"refund item {position}"
        if not isinstance(item, dict):
            raise PayloadError(f"{what} is not an object")
        count = quantity(item.get("quantity"), f"{what}'s quantity")
        units = refund_units(count, units)
        lines.append(RefundLine(line_id=required_id(item.get("lineItemId"), f"{what}'s lineItemId"), quantity=count))
    return ExternalRefund(platform=WIX, refund_id=refund_id, order_id=order_id, amount=amount, lines=lines,
                          reason=text(details.get("reason"), 500) or "Refunded in Wix")
