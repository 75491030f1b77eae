"""A store's marketing consent, read from its order payload into the same consent record as the portal's own
checkout. Pure functions; a payload without a consent field means no consent.

* Shopify: the order's ``buyer_accepts_marketing`` (the box at Shopify's checkout), and the customer's
  ``email_marketing_consent`` / ``sms_marketing_consent`` ({state, opt_in_level, consent_updated_at}). A customer
  whose state says they unsubscribed (or whose address is redacted or invalid) is never subscribed, whatever the
  order's box said: the later word counts.
* Wix: its checkout's own "Subscribe to marketing" box is kept in Wix's Marketing Consent records, not on the
  order, so the webhook cannot carry it. What the order does carry are the site's custom checkout fields
  (``customFields``: {title, translatedTitle, value}): a ticked field titled like a newsletter or marketing
  consent ("Send me news about upcoming events", "Subscribe to our newsletter", "SMS offers") is read as one.
"""
import re

from portal.channels.common import MarketingConsent, text, timestamp

_WITHDRAWN = ("unsubscribed", "redacted", "invalid")
_YES = {"true", "yes", "y", "1", "on", "checked", "✓", "x", "agreed", "accepted"}
_EMAIL_TITLE = re.compile(r"news|newsletter|marketing|subscribe|e-?mail|upcoming events|offers|updates", re.I)
_SMS_TITLE = re.compile(r"\bsms\b|text message|texts\b", re.I)


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _state(consent: dict) -> str:
    return text(consent.get("state"), 30).lower()


def shopify(payload: dict, customer: dict) -> MarketingConsent:
    """The consent an orders/paid payload (an Order, with its customer) carries."""
    email_consent, sms_consent = _dict(customer.get("email_marketing_consent")), _dict(customer.get("sms_marketing_consent"))
    accepts = payload.get("buyer_accepts_marketing")
    said = []
    if isinstance(accepts, bool):
        said.append(f"buyer_accepts_marketing = {str(accepts).lower()}")
    email_state, sms_state = _state(email_consent), _state(sms_consent)
    if email_state:
        level = text(email_consent.get("opt_in_level"), 30)
        said.append(f"customer email_marketing_consent = {email_state}" + (f" ({level})" if level else ""))
    if sms_state:
        said.append(f"customer sms_marketing_consent = {sms_state}")
    email = (accepts is True or email_state == "subscribed") and email_state not in _WITHDRAWN
    sms = sms_state == "subscribed"
    consented_at = timestamp(email_consent.get("consent_updated_at")) if email_state == "subscribed" else None
    if sms and not email:
        consented_at = timestamp(sms_consent.get("consent_updated_at"))
    language = text(payload.get("customer_locale"), 35) or None
    return MarketingConsent(email=email, sms=sms, consented_at=consented_at, language=language,
                            detail="Shopify: " + ("; ".join(said) if said else "no marketing consent in the order"))


def wix(order: dict) -> MarketingConsent:
    """The consent a Wix eCommerce order carries in its custom checkout fields."""
    email = sms = False
    said = []
    for item in order.get("customFields") if isinstance(order.get("customFields"), list) else []:
        if not isinstance(item, dict):
            continue
        title = text(item.get("title") or item.get("translatedTitle"), 200)
        value = item.get("value")
        ticked = value is True or text(value, 20).lower() in _YES
        if not title or not ticked:
            continue
        if _SMS_TITLE.search(title):
            sms, said = True, [*said, f"custom field “{title}” = {text(value, 20) or 'true'}"]
        elif _EMAIL_TITLE.search(title):
            email, said = True, [*said, f"custom field “{title}” = {text(value, 20) or 'true'}"]
    language = text(order.get("buyerLanguage"), 35) or None
    return MarketingConsent(email=email, sms=sms, consented_at=None, language=language,
                            detail="Wix: " + ("; ".join(said) if said else "no marketing consent field in the order"))
