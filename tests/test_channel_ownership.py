"""Proof of store ownership: connecting a Shopify store or a Wix site is a claim, pending until the store's own
signed webhook arrives. Nobody else's claim, proved or not, stands in the real owner's way; a claim that is never
proved imports nothing and expires.

Each organizer works through the pages (the Connect and Map products forms); the store through the webhook
endpoints, signing with its real secret (Shopify) or its app's private key (Wix).
"""
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

import portal.channels.models as channel_models
import portal.channels.ownership as ownership
from portal.channels.models import CLAIM_LIFETIME, CONNECTED, CREATED, DISCONNECTED, PENDING, REJECTED, SalesChannel
from portal.events.models import TicketType
from portal.extensions import db
from portal.orders.models import Order
from portal.types import utcnow
from tests.channel_proof import shopify_proof
from tests.test_channels import (  # noqa: F401 - wix_key is a fixture
    GA_VARIANT, INSTANCE, NO_FEE, SECRET, SHOP, VIP_VARIANT, WIX_GA, WIX_PRODUCT, WIX_VIP, assert_nothing_imported,
    field_error, log_entries, post_shopify, post_wix, public_pem, shopify_order, wix_event, wix_key, wix_token,
)

STRANGER_SECRET = "shpss_0000000000stranger0000000000"  # what someone who is not the store's admin types
TYPO_SECRET = SECRET[:-1] + "X"


@pytest.fixture
def bo(app, make_organizer, login):
    """A second organizer, logged in on a browser of their own."""
    make_organizer(email="bo@organizer.example", name="Bo")
    browser = app.test_client()
    login(email="bo@organizer.example", who=browser)
    return browser


def claim(client, secret, shop=SHOP):
    return client.post_form("/manage/channels/shopify/connect", {"shop_domain": shop, "secret": secret})


def channel_of(app, email, platform="shopify") -> SalesChannel:
    from portal.auth.models import Organizer

    with app.app_context():
        organizer = db.session.scalar(select(Organizer).where(Organizer.email == email))
        channel = db.session.scalar(select(SalesChannel).where(SalesChannel.organizer_id == organizer.id,
                                                               SalesChannel.platform == platform))
        if channel is not None:
            db.session.expunge(channel)
        return channel


def map_types(app, client, channel_id, platform="shopify"):
    with app.app_context():
        ga, vip = (t.id for t in db.session.scalars(select(TicketType).order_by(TicketType.id)))
    form = ({f"variant-{ga}": GA_VARIANT, f"variant-{vip}": VIP_VARIANT} if platform == "shopify" else
            {f"product-{ga}": WIX_PRODUCT, f"variant-{ga}": WIX_GA, f"product-{vip}": WIX_PRODUCT,
             f"variant-{vip}": WIX_VIP})
    assert client.post_form(f"/manage/channels/{channel_id}/products", form).status_code == 303


def organizers_orders(app, email) -> list[int]:
    from portal.auth.models import Organizer

    with app.app_context():
        organizer = db.session.scalar(select(Organizer).where(Organizer.email == email))
        return list(db.session.scalars(select(Order.id).where(Order.organizer_id == organizer.id)))


def card(client, platform="shopify") -> str:
    page = client.get("/manage/integrations/").get_data(as_text=True)
    start = page.index(f'id="{platform}-card"')
    return page[start:page.index("</article>", start)]


@pytest.fixture
def later(monkeypatch):
    """Move the portal's clock forward (what the claim's expiry is measured with)."""
    def move(delta: timedelta):
        moved = lambda: utcnow() + delta  # noqa: E731
        monkeypatch.setattr(ownership, "utcnow", moved)
        monkeypatch.setattr(channel_models, "utcnow", moved)
    return move


# --- nobody blocks the real owner -------------------------------------------------------------------------------------


def test_a_second_organizers_pending_claim_never_stops_the_real_owner(app, client, organizer, bo, make_event):
    make_event(organizer, types=NO_FEE)
    assert claim(bo, STRANGER_SECRET).status_code == 303  # the first claim, by someone who is not the admin
    assert claim(client, SECRET).status_code == 303  # the real owner is not refused
    ada = channel_of(app, "ada@organizer.example")
    assert ada.status == PENDING and channel_of(app, "bo@organizer.example").status == PENDING
    map_types(app, client, ada.id)
    assert_nothing_imported(app)

    response = post_shopify(client, shopify_order())  # the store's first real paid order, signed with its secret
    assert response.status_code == 200 and response.json["outcome"] == CREATED
    assert len(organizers_orders(app, "ada@organizer.example")) == 1
    assert organizers_orders(app, "bo@organizer.example") == []
    ada, stranger = channel_of(app, "ada@organizer.example"), channel_of(app, "bo@organizer.example")
    assert (ada.status, ada.active_key is not None, ada.proved_at is not None) == (CONNECTED, True, True)
    assert (stranger.status, stranger.active_key) == (PENDING, None)  # never proved, and it got nothing
    assert [e.channel_id for e in log_entries(app)] == [ada.id]


def test_a_stranger_who_signs_its_own_deliveries_proves_only_its_own_claim(app, client, organizer, bo, make_event):
    """Anyone can sign a delivery with the secret they typed themselves. That proves the pair (store, that secret),
    never the store: the real owner still connects, and the store's real deliveries reach only the real owner."""
    make_event(organizer, types=NO_FEE)
    assert claim(bo, STRANGER_SECRET).status_code == 303
    assert shopify_proof(bo, SHOP, STRANGER_SECRET).status_code == 200  # forged, but signed with Bo's own secret
    assert channel_of(app, "bo@organizer.example").status == CONNECTED

    assert claim(client, SECRET).status_code == 303  # still not refused
    ada = channel_of(app, "ada@organizer.example")
    map_types(app, client, ada.id)
    assert post_shopify(client, shopify_order()).json["outcome"] == CREATED
    assert len(organizers_orders(app, "ada@organizer.example")) == 1
    assert organizers_orders(app, "bo@organizer.example") == []
    assert channel_of(app, "ada@organizer.example").status == CONNECTED
    bo_channel = channel_of(app, "bo@organizer.example")
    # Bo's log holds Bo's own forged delivery, not the store's real order.
    assert [e.outcome for e in log_entries(app) if e.channel_id == bo_channel.id] == ["ignored"]


def test_claims_with_the_same_secret_the_first_proved_wins_and_the_others_are_told(app, client, organizer, bo,
                                                                                  make_event):
    make_event(organizer, types=NO_FEE)
    assert claim(client, SECRET).status_code == 303
    assert claim(bo, SECRET).status_code == 303  # a colleague who also has the store's secret
    assert shopify_proof(client, SHOP, SECRET).status_code == 200
    ada, other = channel_of(app, "ada@organizer.example"), channel_of(app, "bo@organizer.example")
    assert ada.status == CONNECTED
    assert other.status == DISCONNECTED and "another portal account proved" in other.claim_note
    assert "another portal account proved" in card(bo)
    # And a claim with that secret now is refused at once, with what to do.
    refused = claim(bo, SECRET)
    assert refused.status_code == 422
    assert "already connected to another portal account with this secret" in field_error(
        refused.get_data(as_text=True), "shop_domain")
    # Another secret is a claim of its own, which blocks nobody.
    assert claim(bo, STRANGER_SECRET).status_code == 303


# --- an unproved claim --------------------------------------------------------------------------------------------------


def test_an_unproved_claim_imports_nothing_and_expires(app, client, organizer, make_event, later):
    make_event(organizer, types=NO_FEE)
    assert claim(client, TYPO_SECRET).status_code == 303
    ada = channel_of(app, "ada@organizer.example")
    map_types(app, client, ada.id)
    page = card(client)
    assert "Pending proof" in page and "Send test notification" in page and "Nothing is imported" in page

    response = post_shopify(client, shopify_order())  # the real store signs with its real secret
    assert response.status_code == 401
    assert_nothing_imported(app)
    [entry] = log_entries(app)
    assert entry.outcome == REJECTED and "stays pending" in entry.detail
    assert "was not signed with the secret you entered" in card(client)

    later(CLAIM_LIFETIME - timedelta(minutes=1))
    assert channel_of(app, "ada@organizer.example").is_pending
    later(CLAIM_LIFETIME + timedelta(minutes=1))
    assert channel_of(app, "ada@organizer.example").claim_expired
    # Even a delivery signed with the very secret the claim holds no longer reaches it.
    assert post_shopify(client, shopify_order(), secret=TYPO_SECRET, webhook_id="late").status_code == 404
    assert_nothing_imported(app)
    assert channel_of(app, "ada@organizer.example").status == PENDING  # expired, never proved
    assert "Claim expired" in card(client)
    assert "Claim expired" in client.get("/manage/channels/shopify/connect").get_data(as_text=True)
    # Connecting again (the saved secret kept, or a new one) starts a new claim.
    assert claim(client, SECRET).status_code == 303
    assert channel_of(app, "ada@organizer.example").is_pending
    assert post_shopify(client, shopify_order(), webhook_id="after").json["outcome"] == CREATED


@pytest.mark.parametrize("case", ["real secret, claim has a typo", "unsigned", "garbage signature",
                                  "another store's signature", "tampered body"])
def test_a_claim_with_a_wrong_secret_never_proves(app, client, organizer, make_event, case):
    make_event(organizer, types=NO_FEE)
    claimed = TYPO_SECRET if case == "real secret, claim has a typo" else SECRET
    assert claim(client, claimed).status_code == 303
    ada = channel_of(app, "ada@organizer.example")
    map_types(app, client, ada.id)
    body = shopify_order()
    for topic in ("orders/paid", "shop/update", "refunds/create"):
        if case == "unsigned":
            response = post_shopify(client, body, topic=topic, signature="")
        elif case == "garbage signature":
            response = post_shopify(client, body, topic=topic, signature="not base64 at all ✓")
        elif case == "another store's signature":
            response = post_shopify(client, body, topic=topic, secret=STRANGER_SECRET)
        elif case == "tampered body":
            import json

            from portal.channels import shopify

            raw = json.dumps(body).encode()
            response = post_shopify(client, raw.replace(b"Pat", b"Mal"), topic=topic,
                                    signature=shopify.signature(raw, SECRET))
        else:
            response = post_shopify(client, body, topic=topic)
        assert response.status_code == 401, (topic, response.json)
    channel = channel_of(app, "ada@organizer.example")
    assert (channel.status, channel.active_key, channel.proved_at) == (PENDING, None, None)
    assert_nothing_imported(app)
    assert {e.outcome for e in log_entries(app)} == {REJECTED}


# --- the proof ------------------------------------------------------------------------------------------------------


def test_the_proof_binds_the_store(app, client, organizer, make_event):
    make_event(organizer, types=NO_FEE)
    assert claim(client, SECRET).status_code == 303
    ada = channel_of(app, "ada@organizer.example")
    map_types(app, client, ada.id)
    assert (ada.status, ada.active_key, ada.store_key) == (PENDING, None, f"shopify:{SHOP}")
    assert shopify_proof(client, SHOP, SECRET).json["outcome"] == "ignored"  # Send test notification, any topic
    ada = channel_of(app, "ada@organizer.example")
    assert ada.status == CONNECTED and ada.active_key.startswith(f"shopify:{SHOP}#") and ada.claim_expires_at is None
    assert SECRET not in ada.active_key
    page = card(client)
    assert "Pending proof" not in page and "Connected" in page
    assert "Proved" in client.get("/manage/channels/shopify/connect").get_data(as_text=True)
    assert post_shopify(client, shopify_order()).json["outcome"] == CREATED
    # Saving the same domain with the secret left blank changes nothing: still proved.
    assert claim(client, "").status_code == 303
    assert channel_of(app, "ada@organizer.example").status == CONNECTED
    # A new secret is a new claim: pending until a webhook signed with it arrives (that one is imported).
    new_secret = "shpss_rotated_1234567890abcdef"
    assert claim(client, new_secret).status_code == 303
    assert channel_of(app, "ada@organizer.example").status == PENDING
    assert post_shopify(client, shopify_order(), webhook_id="old-secret").status_code == 401
    changed = shopify_order()
    changed["id"] = 5834921377891
    assert post_shopify(client, changed, secret=new_secret, webhook_id="new").json["outcome"] == CREATED
    assert channel_of(app, "ada@organizer.example").status == CONNECTED


def test_a_pending_claim_can_be_withdrawn(app, client, organizer):
    assert claim(client, SECRET).status_code == 303
    ada = channel_of(app, "ada@organizer.example")
    confirm = client.get(f"/manage/channels/{ada.id}/disconnect").get_data(as_text=True)
    assert "Withdraw your claim" in confirm
    assert client.post_form(f"/manage/channels/{ada.id}/disconnect").status_code == 303
    assert channel_of(app, "ada@organizer.example").status == DISCONNECTED
    assert post_shopify(client, shopify_order()).status_code == 404


def test_wix_a_claim_is_proved_by_the_sites_signed_event_and_a_strangers_key_never_proves(app, client, organizer, bo,
                                                                                         make_event, wix_key):
    make_event(organizer, types=NO_FEE)
    stranger_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    form = {"instance_id": INSTANCE, "public_key": public_pem(stranger_key)}
    assert bo.post_form("/manage/channels/wix/connect", form).status_code == 303
    assert client.post_form("/manage/channels/wix/connect",
                            {"instance_id": INSTANCE, "public_key": public_pem(wix_key)}).status_code == 303
    ada = channel_of(app, "ada@organizer.example", "wix")
    map_types(app, client, ada.id, "wix")
    page = card(client, "wix")
    assert "Pending proof" in page and "marking a test order as paid" in page
    # A token signed with the right key, but expired, proves nothing.
    expired = post_wix(client, wix_token(wix_event(), wix_key, lifetime=-3600))
    assert expired.status_code == 401 and "expired" in expired.json["message"]
    assert channel_of(app, "ada@organizer.example", "wix").status == PENDING
    assert_nothing_imported(app)
    # The site's real Payment Status Updated proves Ada's claim, and is imported.
    response = post_wix(client, wix_token(wix_event(), wix_key))
    assert response.status_code == 200 and response.json["outcome"] == CREATED, response.json
    assert channel_of(app, "ada@organizer.example", "wix").status == CONNECTED
    assert channel_of(app, "bo@organizer.example", "wix").status == PENDING
    assert organizers_orders(app, "bo@organizer.example") == []


# --- stores connected before this existed ---------------------------------------------------------------------------


def test_the_migration_keeps_stores_whose_webhooks_arrived_and_makes_the_others_prove_it(tmp_path, redis_server,
                                                                                       sandbox):
    """A store connected before keeps its connection when a webhook verified with its key already arrived; one
    that never received any (perhaps a squatted domain) becomes a claim that the store's next webhook proves."""
    from flask_migrate import downgrade, upgrade
    from sqlalchemy import text

    from portal import create_app
    from tests.conftest import ROOT, base_config

    app = create_app(base_config(f"sqlite:///{tmp_path / 'old.db'}", redis_server.url, sandbox.url))
    migrations = str(ROOT / "migrations")
    with app.app_context():
        upgrade(directory=migrations, revision="l13consent")
        with db.engine.begin() as conn:
            for n in (1, 2):
                conn.execute(text("INSERT INTO organizers (id, name, email, password_hash, created_at, "
                                  "session_generation) VALUES (:n, 'O', :email, 'x', '2026-01-01 00:00:00', 0)"),
                             {"n": n, "email": f"o{n}@organizer.example"})
                conn.execute(text("INSERT INTO sales_channels (id, organizer_id, platform, status, account, active_key, "
                                  "connected_at) VALUES (:n, :n, :platform, 'connected', :account, :key, "
                                  "'2026-01-01 00:00:00')"),
                             {"n": n, "platform": ("shopify", "wix")[n - 1], "account": f"shop{n}",
                              "key": f"{('shopify', 'wix')[n - 1]}:shop{n}"})
            conn.execute(text("INSERT INTO channel_webhooks (channel_id, received_at, topic, outcome, detail) "
                              "VALUES (1, '2026-01-02 00:00:00', 'orders/paid', 'created', '')"))
        upgrade(directory=migrations)
        with db.engine.connect() as conn:
            rows = conn.execute(text("SELECT id, status, active_key, store_key, claim_expires_at IS NOT NULL, "
                                     "proved_at IS NOT NULL FROM sales_channels ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, "connected", "shopify:shop1", "shopify:shop1", 0, 1),
                                            (2, "pending", None, "wix:shop2", 1, 0)]
        downgrade(directory=migrations, revision="l13consent")
        with db.engine.connect() as conn:
            rows = conn.execute(text("SELECT id, status, active_key FROM sales_channels ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, "connected", "shopify:shop1"), (2, "disconnected", None)]
        db.engine.dispose()
