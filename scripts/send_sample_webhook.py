"""Send a correctly signed sample webhook to a running portal: a paid order (Shopify orders/paid, Wix Payment Status
Updated), its cancellation (orders/cancelled, Order Canceled) or a refund (refunds/create, Refund Completed).

Shopify (use the secret you saved in the portal's Shopify connection):

    .venv/bin/python scripts/send_sample_webhook.py --platform shopify --url http://127.0.0.1:5000 \\
        --secret shpss_0123456789abcdef --shop demo.myshopify.com --variant-id 34505432001 --variant-id 34505432002

Wix: first print the public key (a key pair is generated once, under instance/), paste it with the instance id
into the portal's Wix connection, then send:

    .venv/bin/python scripts/send_sample_webhook.py --platform wix --print-public-key
    .venv/bin/python scripts/send_sample_webhook.py --platform wix --url http://127.0.0.1:5000 \\
        --product-id 8f2d4a6c-1e3b-4c5d-9a7f-6b8e0d2c4a1f

The sample is tests/fixtures/<platform>_....json with a fresh order id and webhook id on each run, so each run is a
new order; pass --webhook-id (and --order-id) again to see a replay answered without a second order.
Product and variant ids are given to the line items in order (the last one repeats for the remaining items).

Then cancel or refund that order: the paid run prints its store order id. Give the same product and variant ids
again. A refund gives back the chosen line items (--line 2 is the sample's second line, VIP; all lines by
default) and their price, or --amount:

    .venv/bin/python scripts/send_sample_webhook.py --platform shopify --secret ... --variant-id ... \
        --variant-id ... --event refund --order-id <store order id> --line 2 --note "Cannot come"
    .venv/bin/python scripts/send_sample_webhook.py --platform shopify --secret ... --event cancel --order-id <id>

Pass --refund-id again to see the same refund answered as a duplicate.
"""
import argparse
import json
import random
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from portal.channels import shopify, wix  # noqa: E402 - after the sys.path line above

FIXTURES = ROOT / "tests" / "fixtures"
DEFAULT_KEY = ROOT / "instance" / "wix-sample-private-key.pem"


def pick(values: list[str], index: int) -> str | None:
    if not values:
        return None
    return values[min(index, len(values) - 1)]


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def chosen_lines(args, items: list[dict]) -> list[dict]:
    """The sample's line items a refund gives back: --line N (1-based, repeatable), all by default."""
    if not args.line:
        return items
    if any(not 1 <= n <= len(items) for n in args.line):
        sys.exit(f"--line must be between 1 and {len(items)}: the sample order has {len(items)} line items")
    return [items[n - 1] for n in dict.fromkeys(args.line)]


def line_total(price: str, quantity: int, discount: str = "0") -> str:
    return f"{float(price) * quantity - float(discount):.2f}"


def shopify_refund(order: dict, args) -> dict:
    """A Refund resource as Shopify posts it with refunds/create."""
    refund_id = int(args.refund_id) if args.refund_id else random.randrange(10**11, 10**12)
    lines = []
    for item in chosen_lines(args, order["line_items"]):
        discount = sum(float(a["amount"]) for a in item.get("discount_allocations") or [])
        subtotal = line_total(item["price"], item["quantity"], str(discount))
        money = {"amount": subtotal, "currency_code": order["currency"]}
        lines.append({"id": random.randrange(10**11, 10**12), "quantity": item["quantity"], "line_item_id": item["id"],
                      "location_id": None, "restock_type": "cancel", "subtotal": float(subtotal), "total_tax": 0.0,
                      "subtotal_set": {"shop_money": money, "presentment_money": money},
                      "total_tax_set": {"shop_money": {"amount": "0.00", "currency_code": order["currency"]},
                                        "presentment_money": {"amount": "0.00", "currency_code": order["currency"]}},
                      "line_item": item})
    amount = args.amount or f"{sum(line['subtotal'] for line in lines):.2f}"
    return {
        "id": refund_id, "order_id": order["id"], "created_at": now_iso(), "processed_at": now_iso(),
        "note": args.note, "user_id": None, "restock": True, "duties": [], "order_adjustments": [],
        "admin_graphql_api_id": f"gid://shopify/Refund/{refund_id}", "refund_line_items": lines,
        "transactions": [{"id": random.randrange(10**12, 10**13), "order_id": order["id"], "kind": "refund",
                          "gateway": "shopify_payments", "status": "success", "message": None,
                          "created_at": now_iso(), "processed_at": now_iso(), "test": False, "authorization": None,
                          "parent_id": random.randrange(10**12, 10**13), "amount": amount,
                          "currency": order["currency"]}],
    }


def shopify_request(args) -> tuple[bytes, dict]:
    order = json.loads((FIXTURES / "shopify_orders_paid.json").read_text())
    order["name"] = f"#{random.randrange(1000, 99999)}" if not args.order_id else f"#{args.order_id}"
    args.order_id = args.order_id or str(random.randrange(10**12, 10**13))
    order["id"] = int(args.order_id)
    order["admin_graphql_api_id"] = f"gid://shopify/Order/{order['id']}"
    if args.email:
        order["email"] = order["contact_email"] = order["customer"]["email"] = args.email
    for index, item in enumerate(order["line_items"]):
        item["product_id"] = int(pick(args.product_id, index) or item["product_id"])
        item["variant_id"] = int(pick(args.variant_id, index) or item["variant_id"])
    topic = {"paid": shopify.TOPIC, "cancel": shopify.CANCELLED_TOPIC, "refund": shopify.REFUND_TOPIC}[args.event]
    if args.event == "cancel":
        order.update(cancelled_at=now_iso(), cancel_reason=args.cancel_reason, financial_status="refunded")
    payload = shopify_refund(order, args) if args.event == "refund" else order
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": shopify.signature(body, args.secret),
        "X-Shopify-Shop-Domain": args.shop,
        "X-Shopify-API-Version": "2025-10",
        "X-Shopify-Webhook-Id": args.webhook_id or str(uuid.uuid4()),
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
    }
    return body, headers


def private_key(path: Path) -> rsa.RSAPrivateKey:
    """The sample's key pair: made once, kept so the public key pasted into the portal stays valid."""
    if path.exists():
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    print(f"Generated a key pair for the sample; the private key is in {path}.", file=sys.stderr)
    return key


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def wix_request(args, key: rsa.RSAPrivateKey) -> tuple[bytes, dict]:
    claims = json.loads((FIXTURES / "wix_order_paid.json").read_text())
    envelope = json.loads(claims["data"])
    event = json.loads(envelope["data"])
    order = event["actionEvent"]["body"]["order"]
    args.order_id = order["id"] = args.order_id or str(uuid.uuid4())
    order["number"] = str(random.randrange(10000, 99999))
    event["entityId"] = order["id"]
    event["id"] = args.webhook_id or str(uuid.uuid4())
    event["eventTime"] = now_iso()
    if args.email:
        order["buyerInfo"]["email"] = args.email
    for index, item in enumerate(order["lineItems"]):
        reference = item["catalogReference"]
        reference["catalogItemId"] = pick(args.product_id, index) or reference["catalogItemId"]
        reference["options"]["variantId"] = pick(args.variant_id, index) or reference["options"]["variantId"]
    event_type = wix.EVENT_TYPE
    if args.event == "cancel":
        event_type = wix.CANCELED_EVENT
        order.update(status="CANCELED")
        event.update(slug="canceled", actionEvent={"body": {"order": order, "restockAllItems": True,
                                                            "sendOrderCanceledEmail": False}})
    elif args.event == "refund":
        event_type = wix.REFUND_EVENT
        items = chosen_lines(args, order["lineItems"])
        paid = sum(float(line_total(i["price"]["amount"], i["quantity"], i["totalDiscount"]["amount"])) for i in items)
        amount = args.amount or f"{paid:.2f}"
        refund = {"id": args.refund_id or str(uuid.uuid4()), "createdDate": now_iso(),
                  "transactions": [{"paymentId": str(uuid.uuid4()), "refundStatus": "SUCCEEDED",
                                    "externalRefund": False,
                                    "amount": {"amount": amount, "formattedAmount": f"${amount}"}}],
                  "details": {"items": [{"lineItemId": i["id"], "quantity": i["quantity"]} for i in items],
                              "shippingIncluded": False, "reason": args.note}}
        event.update(entityFqdn="wix.ecom.v1.order_transactions", slug="refund_completed",
                     actionEvent={"body": {"orderId": order["id"], "refund": refund,
                                           "sideEffects": {"restockInfo": {"type": "NO_ITEMS"},
                                                           "sendOrderRefundedEmail": False}}})
    token = wix.sign(wix.envelope(event, args.instance_id, event_type), key)
    return token.encode(), {"Content-Type": "text/plain"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--platform", choices=("shopify", "wix"), required=True)
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="the portal's base URL")
    parser.add_argument("--secret", help="Shopify: the webhook signing secret saved in the portal")
    parser.add_argument("--shop", default="demo.myshopify.com", help="Shopify: the shop domain saved in the portal")
    parser.add_argument("--instance-id", default="3f2c1a9e-5b7d-4e1f-9a3b-2c8d7e6f5a41",
                        help="Wix: the app instance id saved in the portal")
    parser.add_argument("--private-key", type=Path, default=DEFAULT_KEY,
                        help="Wix: PEM private key to sign with, made if missing "
                             f"(default {DEFAULT_KEY.relative_to(ROOT)})")
    parser.add_argument("--print-public-key", action="store_true", help="Wix: print the public key to paste, and stop")
    parser.add_argument("--product-id", action="append", default=[], help="product id for the line items (repeatable)")
    parser.add_argument("--variant-id", action="append", default=[], help="variant id for the line items (repeatable)")
    parser.add_argument("--email", help="the buyer's e-mail address")
    parser.add_argument("--order-id", help="the store's order id (default: a new one each run)")
    parser.add_argument("--webhook-id", help="the delivery id (default: a new one); repeat one to try a replay")
    parser.add_argument("--event", choices=("paid", "cancel", "refund"), default="paid",
                        help="what to send: the paid order (default), its cancellation, or a refund of it")
    parser.add_argument("--refund-id", help="refund: the store's refund id (default: a new one); repeat one to try "
                                            "the same refund again")
    parser.add_argument("--line", type=int, action="append", default=[],
                        help="refund: the sample's line item to give back, 1-based (repeatable; default: all)")
    parser.add_argument("--amount", help="refund: the amount given back (default: the chosen lines' price)")
    parser.add_argument("--note", default="Refunded in the sample", help="refund: its note (the reason)")
    parser.add_argument("--cancel-reason", default="customer", help="Shopify cancel: customer, fraud, inventory, "
                                                                     "declined, staff or other")
    args = parser.parse_args()
    if args.event != "paid" and not args.order_id and not args.print_public_key:
        parser.error(f"--event {args.event} needs --order-id: the store order id the paid run printed")

    if args.platform == "shopify":
        if not args.secret:
            parser.error("--secret is required for Shopify: the secret you saved in the portal")
        body, headers = shopify_request(args)
    else:
        key = private_key(args.private_key)
        if args.print_public_key:
            print(f"App instance ID: {args.instance_id}\n\nPublic key:\n{public_pem(key)}")
            return 0
        body, headers = wix_request(args, key)

    url = f"{args.url.rstrip('/')}/webhooks/{args.platform}"
    response = requests.post(url, data=body, headers=headers, timeout=15)
    print(f"POST {url} ({args.event}) → HTTP {response.status_code}")
    try:
        print(json.dumps(response.json(), indent=2))
    except ValueError:
        print(response.text[:2000])
    if args.event == "paid":
        print(f"\nStore order id: {args.order_id} (pass --order-id {args.order_id} --event cancel or --event refund "
              "to cancel or refund it)")
    if response.status_code == 401 and args.platform == "wix":
        print("\nThe portal did not accept the signature: paste the public key from --print-public-key into the "
              "Wix connection.", file=sys.stderr)
    if response.status_code == 404:
        print(f"\nNo connected {args.platform} channel matches: connect one in the portal with "
              f"{'--shop ' + args.shop if args.platform == 'shopify' else 'instance id ' + args.instance_id}.",
              file=sys.stderr)
    return 0 if response.ok else 1


if __name__ == "__main__":
    sys.exit(main())
