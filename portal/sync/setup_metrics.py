"""Metric ids for the recipes: Klaviyo makes a metric on its first event, and a metric trigger needs its id. So look
the ids up (GET /api/metrics), and when ours are not all there, seed the example profile with one past event per
metric we send (portal.klaviyo.example), then look again.
"""
import logging
from urllib.parse import parse_qs, urlsplit

from flask import current_app
from redis.exceptions import RedisError

from portal.klaviyo import client, example, recipes
from portal.sync.models import KlaviyoConnection
from portal.sync.queue import redis_connection
from portal.sync.setup_calls import Wait, request
from portal.types import utcnow

log = logging.getLogger("portal.sync")
KLAVIYO_TEST_DOMAINS = ("example.com", "example.org", "example.net", "test.com")  # Klaviyo drops their events


def example_email() -> str:
    """The example profile's address: ours, never a buyer's. KLAVIYO_EXAMPLE_EMAIL, else klaviyo-example@ the
    portal's own domain; a development portal (localhost, or a domain Klaviyo drops) uses a .test address."""
    configured = current_app.config.get("KLAVIYO_EXAMPLE_EMAIL")
    if configured:
        return configured
    host = (urlsplit(current_app.config["PUBLIC_BASE_URL"]).hostname or "").lower()
    if "." in host and not host.replace(".", "").isdigit() and not host.endswith(KLAVIYO_TEST_DOMAINS):
        return f"klaviyo-example@{host}"
    return "klaviyo-example@ticketing-portal.test"


def has_metrics(items: list, metric_ids: dict[str, str]) -> bool:
    return all(name in metric_ids for item in items for name in recipes.recipe_for(item.key).metrics)


def metric_ids(connection: KlaviyoConnection, items: list) -> dict[str, str]:
    """Our metrics' ids by name; seeds the example profile first when they are not all there."""
    if not any(recipes.recipe_for(item.key).metrics for item in items):
        return {}
    found = our_metrics(connection)
    if found:
        return found
    seed(connection)
    found = our_metrics(connection)
    if found:
        return found
    raise Wait(15, "Waiting for Klaviyo to create the metrics from the example events (it can take a few minutes).")


def our_metrics(connection: KlaviyoConnection) -> dict[str, str]:
    """Name -> id of the metrics our integration made, once it has every metric we send ({} until then).

    Klaviyo keeps one metric per name and integration (Shopify's "Placed Order" is not ours), so the metrics are
    grouped by integration and ours is the one holding all the metrics the portal sends."""
    groups: dict[str, dict[str, str]] = {}
    params = {"fields[metric]": "name,integration"}
    for _page in range(25):  # 200 a page: 5,000 metrics is more than any account has
        response = request(connection, "metrics", client.get_metrics, params)
        if not response.accepted or not isinstance(response.body, dict):
            raise Wait(30, f"Klaviyo could not list the metrics yet ({response.error_text()}).")
        for metric in response.body.get("data") or []:
            attributes = metric.get("attributes") or {}
            integration = attributes.get("integration") or {}
            key = str(integration.get("id") or integration.get("key") or integration.get("name") or "")
            groups.setdefault(key, {}).setdefault(attributes.get("name"), metric["id"])
        cursor = parse_qs(urlsplit((response.body.get("links") or {}).get("next") or "").query).get("page[cursor]")
        if not cursor:
            break
        params = {**params, "page[cursor]": cursor[0]}
    ours = [names for names in groups.values() if set(recipes.SENT_METRICS) <= names.keys()]
    if len(ours) > 1:
        log.warning("setup: %s integrations hold all our metrics; using the first", len(ours))
    return ours[0] if ours else {}


def seed(connection: KlaviyoConnection) -> None:
    """One past event per metric we send, for the example profile (fixed unique_ids: a repeat adds nothing)."""
    flag = f"portal:setup:seeded:{connection.account_id or connection.id}"
    try:
        if redis_connection().get(flag):
            return  # seeded a moment ago: Klaviyo is still processing, so only look again
    except RedisError:
        pass
    for event in example.example_events(example_email(), utcnow()):
        response = request(connection, "events", client.create_event, event.body)
        if not response.accepted:
            raise Wait(30, f"Klaviyo did not take the example events yet ({response.error_text()}).")
    log.info("setup: seeded the example profile connection=%s", connection.id)
    try:
        redis_connection().set(flag, 1, ex=3600)
    except RedisError:
        pass
