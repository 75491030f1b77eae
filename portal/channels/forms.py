"""Reading the Connect and Map products forms. Every problem is reported next to its field; nothing typed is lost."""
import re
from dataclasses import dataclass, field

from portal.channels import ownership, shopify, wix
from portal.channels.models import CONNECTED, PENDING, SHOPIFY, WIX, SalesChannel
from portal.events.models import TicketType

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SHOPIFY_ID = re.compile(r"\d{1,20}")


@dataclass
class Form:
    values: dict
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class ConnectForm(Form):
    account: str = ""
    secret: str | None = None  # None: keep the one already saved


def read_connect(platform: str, form, channel: SalesChannel | None) -> ConnectForm:
    """Shopify: shop domain and webhook secret. Wix: app instance id and public key."""
    keeping = channel is not None and channel.status in (CONNECTED, PENDING) and channel.secret_enc is not None
    if platform == SHOPIFY:
        raw_account, raw_secret = (form.get("shop_domain") or "").strip(), (form.get("secret") or "").strip()
        result = ConnectForm(values={"shop_domain": raw_account})
        result.account = shopify.normalize_shop(raw_account)
        if not raw_account:
            result.errors["shop_domain"] = "Enter your store's myshopify.com domain, like demo.myshopify.com."
        elif not result.account:
            result.errors["shop_domain"] = ("Use the store's permanent myshopify.com domain, like demo.myshopify.com "
                                            "(Shopify admin → Settings → Domains), not a custom domain.")
        if raw_secret:
            if len(raw_secret) < 16 or len(raw_secret) > 500 or re.search(r"\s", raw_secret):
                result.errors["secret"] = ("Paste the secret exactly as Shopify shows it: one word of 16 characters or "
                                           "more, without spaces.")
            result.secret = raw_secret
        elif not keeping:
            result.errors["secret"] = "Paste the secret your Shopify webhooks are signed with."
        field_name = "shop_domain"
    else:
        raw_account, raw_secret = (form.get("instance_id") or "").strip(), (form.get("public_key") or "").strip()
        result = ConnectForm(values={"instance_id": raw_account, "public_key": raw_secret})
        result.account = raw_account.lower()
        if not raw_account:
            result.errors["instance_id"] = "Enter the app instance ID of your Wix site."
        elif not _GUID.fullmatch(raw_account):
            result.errors["instance_id"] = ("Use the instance ID exactly as Wix shows it, a GUID like "
                                            "3f2c1a9e-5b7d-4e1f-9a3b-2c8d7e6f5a41.")
        if raw_secret:
            try:
                result.secret = wix.normalize_public_key(raw_secret)
            except ValueError:
                result.errors["public_key"] = ("This is not an RSA public key. Paste the whole key from your Wix "
                                               "app's Webhooks page, from -----BEGIN PUBLIC KEY----- to "
                                               "-----END PUBLIC KEY-----.")
        elif not keeping:
            result.errors["public_key"] = "Paste the public key Wix signs your webhooks with."
        field_name = "instance_id"
    # Claims by other accounts never stand in the way (see ownership.py): only the same key, already proved there.
    secret = result.secret or (channel.secret if keeping else None)
    if result.account and secret and not result.errors:
        other = ownership.connected_with_same_key(platform, result.account, secret)
        if other is not None and (channel is None or other.id != channel.id):
            where, key = ("store", "secret") if platform == SHOPIFY else ("site", "public key")
            result.errors[field_name] = (f"This {where} is already connected to another portal account with this "
                                         f"{key}. One {key} connects to one account: disconnect it there first.")
    return result


@dataclass
class MappingRow:
    ticket_type: TicketType
    product_id: str | None
    variant_id: str | None


@dataclass
class MappingForm(Form):
    rows: list[MappingRow] = field(default_factory=list)


def _clean_id(platform: str, value: str, what: str) -> tuple[str | None, str | None]:
    """(id, error) for one typed product or variant id."""
    value = value.strip()
    if not value:
        return None, None
    if platform == SHOPIFY:
        value = shopify.normalize_id(value)
        if not _SHOPIFY_ID.fullmatch(value):
            return None, f"Use the numeric {what} ID, like 7513594 (it ends the {what}'s URL in your Shopify admin)."
        return value, None
    if not _GUID.fullmatch(value):
        return None, f"Use the {what} ID as Wix shows it, a GUID like 3f2c1a9e-5b7d-4e1f-9a3b-2c8d7e6f5a41."
    return value.lower(), None


def read_mappings(channel: SalesChannel, form, ticket_types: list[TicketType]) -> MappingForm:
    """One product id and/or variant id per ticket type (both blank: not sold in this store)."""
    result = MappingForm(values={})
    used: dict[tuple, TicketType] = {}
    for ticket_type in ticket_types:
        product_key, variant_key = f"product-{ticket_type.id}", f"variant-{ticket_type.id}"
        raw_product, raw_variant = (form.get(product_key) or "")[:200], (form.get(variant_key) or "")[:200]
        result.values[product_key], result.values[variant_key] = raw_product, raw_variant
        product_id, problem = _clean_id(channel.platform, raw_product, "product")
        if problem:
            result.errors[product_key] = problem
        variant_id, problem = _clean_id(channel.platform, raw_variant, "variant")
        if channel.platform == WIX and variant_id == wix.NO_VARIANT:
            variant_id = None  # the "no options" variant: the product itself
        if problem:
            result.errors[variant_key] = problem
        elif channel.platform == WIX and variant_id and not raw_product.strip():
            result.errors[product_key] = "Enter the product ID too: Wix variant IDs are only unique within their product."
        if product_key in result.errors or variant_key in result.errors or not (product_id or variant_id):
            continue
        key = (product_id, variant_id)
        if key in used:
            other = used[key]
            result.errors[variant_key if variant_id else product_key] = (
                f"{other.event.name} – {other.name} already uses this "
                f"{'variant' if variant_id else 'product'}. Each product or variant sells one ticket type.")
            continue
        used[key] = ticket_type
        result.rows.append(MappingRow(ticket_type, product_id, variant_id))
    return result
