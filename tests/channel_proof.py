"""Proving a claimed store the way a real one does: a delivery signed with its secret or key reaches the webhook
endpoint. For fixtures that need a connected (proved) store."""
import json
import uuid

from sqlalchemy import delete, update

from portal.channels import shopify, wix
from portal.channels.models import ChannelWebhook, SalesChannel
from portal.extensions import db

PROOF_TOPIC = "shop/update"  # a topic the portal does not import: the proof then changes nothing else
PROOF_EVENT = "wix.ecom.v1.order_created"


def shopify_proof(client, shop: str, secret: str, topic: str = PROOF_TOPIC, body: dict | None = None):
    """What Shopify sends for any topic (here one the portal ignores), signed with the store's secret."""
    raw = json.dumps(body if body is not None else {"id": 1, "domain": shop}).encode()
    return client.post("/webhooks/shopify", data=raw, content_type="application/json", headers={
        "X-Shopify-Topic": topic, "X-Shopify-Shop-Domain": shop, "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Hmac-Sha256": shopify.signature(raw, secret)})


def wix_proof(client, instance_id: str, private_key, event_type: str = PROOF_EVENT):
    """A Wix event the portal ignores, signed with the app's private key."""
    token = wix.sign(wix.envelope({"id": str(uuid.uuid4())}, instance_id, event_type), private_key)
    return client.post("/webhooks/wix", data=token.encode(), content_type="text/plain")


def prove(app, channel_id: int, *, secret: str | None = None, private_key=None) -> None:
    """Prove a pending claim through the webhook endpoint, then forget that delivery, so the test starts from an
    empty log (as the store's first real order would find it)."""
    with app.app_context():
        channel = db.session.get(SalesChannel, channel_id)
        platform, account = channel.platform, channel.account
    client = app.test_client()
    if platform == shopify.SHOPIFY:
        response = shopify_proof(client, account, secret)
    else:
        response = wix_proof(client, account, private_key)
    assert response.status_code == 200, response.get_data(as_text=True)
    with app.app_context():
        channel = db.session.get(SalesChannel, channel_id)
        assert channel.is_connected, (channel.status, response.json)
        db.session.execute(delete(ChannelWebhook).where(ChannelWebhook.channel_id == channel_id))
        db.session.execute(update(SalesChannel).where(SalesChannel.id == channel_id).values(last_webhook_at=None))
        db.session.commit()
