"""Send a correctly signed sample Shopify orders/paid or Wix "Payment Status Updated" webhook to a running portal.

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


def shopify_request(args) -> tuple[bytes, dict]:
    order = json.loads((FIXTURES / "shopify_orders_paid.json").read_text())
    order["id"] = int(args.order_id) if args.order_id else random.randrange(10**12, 10**13)
    order["admin_graphql_api_id"] = f"gid://shopify/Order/{order['id']}"
    order["name"] = f"#{random.randrange(1000, 99999)}" if not args.order_id else f"#{args.order_id}"
    if args.email:
        order["email"] = order["contact_email"] = order["customer"]["email"] = args.email
    for index, item in enumerate(order["line_items"]):
        item["product_id"] = int(pick(args.product_id, index) or item["product_id"])
        item["variant_id"] = int(pick(args.variant_id, index) or item["variant_id"])
    body = json.dumps(order).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": shopify.TOPIC,
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
    order["id"] = args.order_id or str(uuid.uuid4())
    order["number"] = str(random.randrange(10000, 99999))
    event["entityId"] = order["id"]
    event["id"] = args.webhook_id or str(uuid.uuid4())
    event["eventTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    if args.email:
        order["buyerInfo"]["email"] = args.email
    for index, item in enumerate(order["lineItems"]):
        reference = item["catalogReference"]
        reference["catalogItemId"] = pick(args.product_id, index) or reference["catalogItemId"]
        reference["options"]["variantId"] = pick(args.variant_id, index) or reference["options"]["variantId"]
    token = wix.sign(wix.envelope(event, args.instance_id), key)
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
    args = parser.parse_args()

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
    print(f"POST {url} → HTTP {response.status_code}")
    try:
        print(json.dumps(response.json(), indent=2))
    except ValueError:
        print(response.text[:2000])
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
