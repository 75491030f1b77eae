"""The lease heartbeat: a worker renews the claims it is sending for as long as it sends them.

A claimed outbox row carries a lease (OUTBOX_LEASE_SECONDS); once it has run out, any worker's sweeper takes
the row back. That is how a killed worker's rows come back, so the lease is short, a few seconds. It can be
short only because the worker that holds it renews it every quarter of a lease while its send runs: a slow
Klaviyo answer, a rate-limit wait or a big Bulk Create never outlasts it, and a dead worker stops renewing
at once.

The renewal runs in a thread of the worker process rather than as an rq job: it has to go on while the job's
own thread waits on Klaviyo, and it has to die with that process, which is the point.
"""
import logging
import threading

from flask import current_app

from portal.sync import outbox
from portal.sync.outbox import Claimed

log = logging.getLogger("portal.sync")


class Heartbeat:
    """Renews the lease of one claim's rows until stop()."""

    def __init__(self, rows: list[Claimed], lease_seconds: float):
        self.tokens = sorted({row.claim_token for row in rows})
        self.lease_seconds = lease_seconds
        self._stopped = threading.Event()
        self._thread = None
        if self.tokens:
            self._app = current_app._get_current_object()
            self._thread = threading.Thread(target=self._beat, name="outbox-lease", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        interval = max(self.lease_seconds / 4, 0.2)
        while not self._stopped.wait(interval):
            try:
                with self._app.app_context():  # a session of its own: the job's is busy in its own thread
                    outbox.renew_claims(self.tokens, self.lease_seconds)
            except Exception as exc:  # noqa: BLE001 - one missed beat is survivable: three more fit in a lease
                log.warning("lease renewal failed (%s); trying again in %.1f s", type(exc).__name__, interval)

    def stop(self) -> None:
        """The rows are recorded or handed back: stop renewing. (No join: a beat still under way renews
        nothing, since it only touches rows still claimed under these tokens.)"""
        self._stopped.set()


def keep(rows: list[Claimed], lease_seconds: float) -> Heartbeat:
    """Start renewing the lease on these freshly claimed rows; call .stop() once they are recorded or released."""
    return Heartbeat(rows, lease_seconds)
