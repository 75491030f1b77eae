"""The sweeper's rounds for the connection's health, run by every worker every SWEEP_INTERVAL_SECONDS (from
jobs.sweep): Started Checkout for abandoned checkouts, alert incidents, reading test orders back from Klaviyo, and
the double-send guard. One failing round never stops the others (the worker logs it)."""
import logging

from portal.extensions import db
from portal.sync import abandoned, incidents, metric_guard, verify

log = logging.getLogger("portal.sync")


def sweep() -> None:
    for part in (abandoned.sweep, incidents.sweep, verify.sweep, metric_guard.sweep):
        try:
            part()
        except Exception:  # noqa: BLE001 - logged; the next round tries again
            db.session.rollback()
            log.exception("health sweep failed: %s", part.__module__)
